"""A real one-node Slurm cluster in a temporary folder: munged, slurmctld and slurmd of the
distribution's packages (Debian: `apt-get install slurm-wlm munge`), two partitions on the one
node standing for two kinds of machine.

Everything it writes (slurm.conf, the munge key and socket, state, logs) stays in its folder,
its ports are free ones picked at start, and its node has a name of its own, so it touches no
system-wide Slurm or munge and two of them can run side by side. As a test fixture
(`slurm_cluster`, one per test session) it skips with the reason where the packages or root
are missing. From a shell, to try `qkbench submit slurm` by hand:

    python tests/slurm_cluster.py start /tmp/cluster   # prints: export SLURM_CONF=...
    python tests/slurm_cluster.py stop /tmp/cluster
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PARTITIONS = ("alpha", "beta")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
DAEMONS = ("slurmd", "slurmctld", "munged")  # the order they are stopped in
MARK = "# A one-node cluster for qkbench's tests (tests/slurm_cluster.py)."


def missing() -> str | None:
    """Why a cluster cannot start here, or None."""
    absent = [name for name in COMMANDS if shutil.which(name) is None]
    if absent:
        return (f"Slurm is not installed ({', '.join(absent)} not found; as root: apt-get "
                "install slurm-wlm munge)")
    if os.geteuid() != 0:
        return "the one-node Slurm cluster needs root (slurmd starts jobs as their user)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """The daemons of one cluster and the folder they live in."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60) -> None:
        folder = self.folder
        if folder.exists() and any(folder.iterdir()):
            raise RuntimeError(f"{folder} is not empty; a cluster starts in a folder of its own")
        for name in ("munge", "state", "spool", "log"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / "munge").chmod(0o700)
        key = folder / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))  # a key made on the spot, for this cluster
        key.chmod(0o400)
        socket_path = folder / "munge" / "munge.socket"
        node = f"qkbench-{secrets.token_hex(3)}"
        self.conf.write_text(_slurm_conf(folder, node, socket_path, os.cpu_count() or 1))
        self._run("munged", "--force", f"--socket={socket_path}", f"--key-file={key}",
                  f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'log/munged.log'}",
                  f"--seed-file={folder / 'munge/seed'}")
        self._run("slurmctld", "-i")  # -i: no state of an earlier cluster to recover
        self._run("slurmd", "-N", node)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.output("sinfo", "--noheader", "--format=%t")
            # A fresh node reads "unk" until the controller has heard from it, then "idle".
            if states and all(s.strip().rstrip("*") in ("idle", "mix", "alloc")
                              for s in states.splitlines()):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the Slurm node did not come up in {timeout:.0f} s: "
                           f"{self.output('sinfo', '--noheader')!r}; {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        """The daemons' last words, for a failure message (the folder goes at teardown)."""
        tails = []
        for log in sorted((self.folder / "log").glob("*.log")):
            text = log.read_text(errors="replace").strip().splitlines()[-lines:]
            tails.append(f"{log.name}: " + " | ".join(text))
        return "; ".join(tails) or "no logs"

    def stop(self) -> None:
        """Cancel every job, stop the daemons (by the ids in their pid files), remove the
        folder."""
        if not self.conf.is_file() or not self.conf.read_text().startswith(MARK):
            raise RuntimeError(f"{self.folder} holds no cluster this helper started")
        ids = self.output("squeue", "--noheader", "--format=%F").split()
        if ids:
            subprocess.run(["scancel", *sorted(set(ids))], env=self.env, check=False,
                           capture_output=True)
            deadline = time.monotonic() + 20
            while self.output("squeue", "--noheader") and time.monotonic() < deadline:
                time.sleep(0.2)
        pids = [pid for daemon in DAEMONS if (pid := _pid(self.folder / f"{daemon}.pid"))]
        for pid in pids:  # all asked at once: each takes seconds to wind down
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)

    def output(self, *command: str) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True,
                              check=False, timeout=60)
        return done.stdout.strip()

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True,
                              check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} did not start: {done.stderr.strip()}; "
                               f"{self.log_tail()}")


def _pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _slurm_conf(folder: Path, node: str, munge_socket: Path, cpus: int) -> str:
    partitions = "\n".join(
        f"PartitionName={name} Nodes={node} MaxTime=INFINITE State=UP"
        + (" Default=YES" if i == 0 else "") for i, name in enumerate(PARTITIONS))
    return f"""\
{MARK}
ClusterName=qkbench{secrets.token_hex(2)}
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'log/slurmctld.log'}
SlurmdLogFile={folder / 'log/slurmd.log'}
# Without cgroups (containers, small VMs): processes found through /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# Ended jobs stay visible (scontrol show job) for five minutes: the tests read exit codes.
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName={node} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
{partitions}
"""


def slurm_cluster_fixture() -> Iterator[Cluster]:
    """The session's cluster; SLURM_CONF points at it while the tests run."""
    import pytest

    reason = missing()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="qkbench-slurm-")))
    previous = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/slurm_cluster.py start|stop FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[1]).resolve()
    if argv[0] == "start":
        reason = missing()
        if reason:
            print(f"cannot start: {reason}", file=sys.stderr)
            return 2
        Cluster(folder).start()
        print(f"export SLURM_CONF={folder / 'slurm.conf'}")
    else:
        Cluster(folder).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
