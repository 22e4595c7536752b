"""One sharded sweep → the text of its Slurm batch scripts (nothing is submitted here).

Per partition (a kind of machine): a job-array script whose task I runs shard I/N of the sweep,
and a merge script that joins the partition's shards. With several partitions, a report script
shows the merged runs side by side. Every script first checks that the node runs the Python
and the qkbench that `submit` ran in: shards timed by two versions must not be merged.

The folder the scripts write (`out`, one folder per partition)::

    out/config.yaml, submission.json, report.sbatch, report.html (several partitions)
    out/P/shard.sbatch, merge.sbatch, shard-1 … shard-N (run directories), merged-P, logs/
"""

from __future__ import annotations

import hashlib
import platform
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import qkbench.version

# A partition's name is a folder name and part of job names: plain words only.
PARTITION_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
DEFAULT_PARTITION = "default"  # the folder of a sweep sent to the cluster's default partition
# What a node's interpreter runs to print its environment(), checked against submit's.
ENVIRONMENT_PROBE = "from qkbench.cluster.slurm_scripts import environment; print(environment())"


@dataclass(frozen=True)
class SweepPlan:
    """What one submission sends: the sweep, where it lands, how the jobs are shaped."""

    out: PurePosixPath  # absolute: tasks start in another process, maybe on another node
    config_name: str
    shards: int
    partitions: tuple[str, ...]  # empty: the cluster's default partition
    python: str  # the interpreter `submit` ran in (sys.executable)
    environment: str  # environment() where submit ran
    workdir: str  # where tasks start (plugins given as import paths resolve from here)
    exclusive: bool = True
    max_parallel: int | None = None
    sbatch_args: tuple[str, ...] = ()  # every job (account, time, QOS)
    shard_sbatch_args: tuple[str, ...] = ()  # the shard tasks only (GPUs, constraint, CPUs)

    @property
    def folders(self) -> tuple[str, ...]:
        """One folder per partition; the default partition's is `default`."""
        return self.partitions or (DEFAULT_PARTITION,)

    def config_path(self) -> PurePosixPath:
        return self.out / "config.yaml"

    def merged_run(self, folder: str) -> PurePosixPath:
        # Named after the partition: a report of several labels runs by folder name when two
        # machines would read alike.
        return self.out / folder / f"merged-{folder}"

    def shard_run(self, folder: str, index: int) -> PurePosixPath:
        return self.out / folder / f"shard-{index}"


def array_range(indices: list[int], max_parallel: int | None) -> str:
    """Slurm's --array value: 1-8, or 2,5 (a resubmission), throttled by %K."""
    indices = sorted(indices)
    if indices == list(range(indices[0], indices[-1] + 1)) and len(indices) > 1:
        text = f"{indices[0]}-{indices[-1]}"
    else:
        text = ",".join(str(i) for i in indices)
    return text + (f"%{max_parallel}" if max_parallel else "")


def shard_script(plan: SweepPlan, folder: str) -> str:
    """The job array of one partition: task I runs shard I/N, or resumes it when the task was
    requeued (preempted, its node failed, `scontrol requeue`) or resubmitted."""
    q = shlex.quote
    directives = [*_common(plan, folder, f"{folder}", _log(plan, folder, "shard-%a.log")),
                  f"--array={array_range(list(range(1, plan.shards + 1)), plan.max_parallel)}",
                  "--requeue"]
    if plan.exclusive:
        # Two shards on one node take each other's cores, caches and memory bandwidth: their
        # timings would measure the neighbour as much as the kernel.
        directives.append("--exclusive")
    directives += [*plan.sbatch_args, *plan.shard_sbatch_args]
    body = f"""\
task="${{SLURM_ARRAY_TASK_ID:?runs as a task of a Slurm job array (sbatch --array)}}"
folder={q(str(plan.out / folder))}/shard-"$task"
if [ -f "$folder/meta.json" ]; then
    # This shard ran before (a requeued or resubmitted task): finish only its missing cells.
    exec "$python" -m qkbench run --resume "$folder" --no-progress --no-plots
fi
exec "$python" -m qkbench run {q(str(plan.config_path()))} --shard "$task/{plan.shards}" \\
    --out "$folder" --no-progress --no-plots
"""
    return _script(plan, directives, body)


def merge_script(plan: SweepPlan, folder: str) -> str:
    """The merge of one partition, run after every task ended however it ended (afterany):
    it merges the shards that exist, lists the cells that are missing and exits 1 then."""
    q = shlex.quote
    directives = [*_common(plan, folder, f"{folder}-merge", _log(plan, folder, "merge-%j.log")),
                  *plan.sbatch_args]
    merged = q(str(plan.merged_run(folder)))
    body = f"""\
shards=()
for task in $(seq 1 {plan.shards}); do
    folder={q(str(plan.out / folder))}/shard-"$task"
    if [ -f "$folder/meta.json" ]; then shards+=("$folder"); fi
done
if [ "${{#shards[@]}}" -eq 0 ]; then
    echo "qkbench: no shard of {folder} wrote a run directory; resubmit them:" \\
         "qkbench submit slurm --resume {q(str(plan.out))}" >&2
    exit 1
fi
rm -rf {merged}  # an earlier merge of the same shards (before a resubmission)
"$python" -m qkbench merge "${{shards[@]}}" --out {merged}
code=$?
if [ "$code" -eq 1 ]; then
    echo "qkbench: resubmit the missing shards: qkbench submit slurm --resume" \\
         {q(str(plan.out))} >&2
fi
exit "$code"
"""
    return _script(plan, directives, body)


def report_script(plan: SweepPlan) -> str:
    """One report of every partition's merged run, side by side (several partitions)."""
    q = shlex.quote
    directives = [*_common(plan, plan.folders[0], "report",
                           _escape(str(plan.out / "report.log"))), *plan.sbatch_args]
    candidates = " ".join(q(str(plan.merged_run(folder))) for folder in plan.folders)
    body = f"""\
runs=()
for run in {candidates}; do
    if [ -f "$run/summary.parquet" ]; then runs+=("$run"); fi
done
if [ "${{#runs[@]}}" -eq 0 ]; then
    echo "qkbench: no partition's merge wrote a run; nothing to report" >&2
    exit 1
fi
exec "$python" -m qkbench report "${{runs[@]}}" --out {q(str(plan.out / 'report.html'))}
"""
    return _script(plan, directives, body)


def _common(plan: SweepPlan, folder: str, job: str, output: str) -> list[str]:
    """The directives every job has: its name, its partition, its log (appended to, so that a
    requeued task keeps what its first try said)."""
    partition = [f"--partition={folder}"] if plan.partitions else []
    return [f"--job-name=qkbench-{plan.config_name}-{job}", *partition, f"--output={output}",
            "--open-mode=append"]


def _script(plan: SweepPlan, directives: list[str], body: str) -> str:
    # Plugins named by import path resolve from the folder submit ran in, as they did there.
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "",
             environment_check(plan), f"cd {shlex.quote(plan.workdir)} || exit 2", body]
    return "\n".join(lines)


def environment() -> str:
    """This interpreter's Python version, qkbench's version and a digest of qkbench's own code:
    what every task's node must show. The digest catches what the version cannot: an editable
    install whose code changed while the jobs queued."""
    import qkbench.backends

    sources: dict[str, bytes] = {}
    for package, root in (("qkbench", Path(qkbench.version.__file__).parent),
                          ("qkbench.backends", Path(qkbench.backends.__file__).parent)):
        for path in root.rglob("*.py"):
            # Named by module, so an editable install and a wheel of the same code agree.
            module = ".".join((package, *path.relative_to(root).with_suffix("").parts))
            sources.setdefault(module, path.read_bytes())
    digest = hashlib.sha256()
    for module in sorted(sources):
        digest.update(module.encode() + b"\0" + sources[module])
    return (f"Python {platform.python_version()}, qkbench {qkbench.version.__version__}, "
            f"code {digest.hexdigest()[:12]}")


def environment_check(plan: SweepPlan) -> str:
    """Bash that stops a task (one line, exit 2) on a node whose interpreter or qkbench is not
    the one `submit` ran in."""
    q = shlex.quote
    return f"""\
# The environment submit ran in; a node with another one refuses to run (exit 2).
set -u
python={q(plan.python)}
if [ ! -x "$python" ]; then
    echo "qkbench: error: $(hostname) has no $python, the interpreter submit ran in" >&2
    exit 2
fi
found=$("$python" -c {q(ENVIRONMENT_PROBE)} 2>/dev/null || echo "no qkbench")
if [ "$found" != {q(plan.environment)} ]; then
    echo "qkbench: error: $python on $(hostname) has $found; submit ran" \
         {q(plan.environment)} >&2
    exit 2
fi
"""


def _log(plan: SweepPlan, folder: str, name: str) -> str:
    return f"{_escape(str(plan.out / folder / 'logs'))}/{name}"


def _escape(path: str) -> str:
    # Slurm expands %-patterns in --output paths; a literal % is written %%.
    return path.replace("%", "%%")
