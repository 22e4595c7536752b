"""What the kernel itself reports about a stretch of sampling: read around each round of a group.

Before the harness guesses (the machine check), it asks the OS. Three causes can be read
directly and each one, when it hits a round, slows every backend of the group in its own way:

* **CFS bandwidth throttling of qkbench's own cgroup** — a container with a CPU limit (Docker
  `--cpus`, Kubernetes limits, Slurm's cgroups) runs out of quota inside a period and every
  thread of the cgroup stops until the next period. A two-threaded BLAS call under a 1.2-core
  quota loses most of a period now and then; a one-threaded loop almost never. Read from
  `cpu.stat` of the cgroup the process is in and of every ancestor up to the mount root (the
  limit may sit on a parent: a container's own cgroup, a Slurm job's): cgroup v2
  `throttled_usec`, v1 `throttled_time` (ns).
* **Hypervisor steal** — `/proc/stat`'s steal ticks: the vCPU was runnable but the host ran
  someone else.
* **CPU clock** — `scaling_cur_freq` where cpufreq is exposed (it is not on most VMs); the
  round's mean MHz is recorded, it never sets a round aside alone (a slower clock slows every
  backend alike, which interleaving cancels).

* **Other processes' CPU** — `/proc/stat`'s busy ticks less the steal and less what
  qkbench's own processes used (`/proc/PID/stat`), when the watch is given their pids: a
  test suite or a build beside the sweep takes cores from a multi-threaded call. Both
  counters move in whole ticks, each CPU's and each process's rounded on its own, so a round
  counts as many ticks fewer as there are CPUs and own processes that ran (measured on the
  2-vCPU Zen 3 VM: a test suite beside the default config read a whole core of foreign work
  over its first groups, which slowed them 10-60x, and the machine check alone called them
  "cannot judge"). The group's average is also `qkbench.machine.contention`'s `foreign_load`.

A round is set aside when throttling or steal took more than `share` of the round's capacity
(wall time for throttling, which stops every thread at once; wall time × CPUs for steal, which
takes one vCPU at a time). Steal counts one tick less than the counter moved: it is counted in
whole ticks, so that much of any reading may be the counter's resolution, not lost time. The runner passes half the config's `target_rel_ci`: a loss smaller
than that cannot move a median by more than the interval the run aims for, one larger can.
Whatever cannot be read (another OS, no cgroup cpu controller, a sandbox) is `None`: "unknown",
never an error.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# One reading of the tick rate, /proc's and the round watch's alike.
from qkbench.machine.contention import cpu_times, process_cpu_s, ticks_per_second
from qkbench.machine.cpu_quota import affinity_cores, cpu_cgroup_folders

_PROC, _SYS = Path("/proc"), Path("/sys")


@dataclass(frozen=True)
class Reading:
    """Cumulative counters at one moment; a field is None when the OS does not tell it."""

    wall_s: float
    throttled_s: float | None  # the largest throttled time over the cgroup and its ancestors
    steal_s: float | None  # all CPUs together
    mhz: float | None  # mean current clock over the CPUs that expose it
    busy_s: float | None = None  # all CPUs' busy time, steal included
    own_s: dict[int, float] | None = None  # CPU time of each of qkbench's own processes


def _usable_cpus() -> int:
    # Steal and foreign work take whole CPUs of the affinity mask, whatever the quota.
    return affinity_cores()


def steal_s(proc: Path = _PROC) -> float | None:
    """CPU seconds the hypervisor has stolen since boot, all CPUs together, or None."""
    times = cpu_times(proc)
    return None if times is None else times[1]


def cpu_stat_files(proc: Path = _PROC) -> list[Path]:
    """cpu.stat of the cgroup this process is in and of each ancestor inside the mount, the
    process's own first (located by qkbench.machine.cpu_quota, which reads the quota from the
    same folders)."""
    version, folders = cpu_cgroup_folders(proc)
    found = [folder / "cpu.stat" for folder in folders if (folder / "cpu.stat").is_file()]
    # In a hybrid layout the v2 tree has no cpu controller: no throttling figures.
    if version == "v2" and not any(_has_throttling(path) for path in found):
        return []
    return found


def _has_throttling(path: Path) -> bool:
    return _throttled_s(path) is not None


def _throttled_s(path: Path) -> float | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    values = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
    try:
        if "throttled_usec" in values:
            return int(values["throttled_usec"]) / 1e6
        if "throttled_time" in values:
            return int(values["throttled_time"]) / 1e9
    except ValueError:
        return None
    return None


def throttled_s(files: list[Path]) -> float | None:
    values = [v for v in (_throttled_s(path) for path in files) if v is not None]
    return max(values) if values else None


def mean_mhz(sys: Path = _SYS) -> float | None:
    values = []
    for path in sorted((sys / "devices" / "system" / "cpu").glob("cpu[0-9]*/cpufreq/"
                                                                "scaling_cur_freq")):
        try:
            values.append(int(path.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return sum(values) / len(values) if values else None


# How many finished rounds back a throttle's reading is traced (`RoundCauses.earlier_rounds`):
# a throttle lasts at most one CFS period (the quota refills each period: 100 ms by default,
# 1 s at most, a kernel bound), and 64 rounds of 16 ms or more cover the longest. The walk is a
# few comparisons a round.
TRACE_ROUNDS = 64


class RoundCauses:
    """Reads the counters at the start and end of each round: `start()`, then `stop()` gives
    the causes that spoil the round (name → seconds lost), empty when none did. Every round's
    clock reading is kept in `mhz_readings`."""

    def __init__(self, share: float, proc: Path = _PROC, sys: Path = _SYS,
                 clock: Callable[[], float] = time.monotonic, cpus: int | None = None,
                 own_pids: Callable[[], Iterable[int]] | None = None,
                 threads: int | None = None) -> None:
        """`threads`: the most threads a cell of the group computes with (None: every CPU)."""
        self.share = share
        self._own_pids = own_pids  # None: other processes' CPU is not watched
        self._proc, self._sys, self._clock = proc, sys, clock
        self._cpus = cpus or _usable_cpus()
        self._threads = min(threads, self._cpus) if threads and threads > 0 else self._cpus
        self._tick_s = 1.0 / ticks_per_second()  # the steal counter's resolution
        self._stat_files = cpu_stat_files(proc)
        self._start: Reading | None = None
        self.mhz_readings: list[float] = []
        # Of the last round `stop()` named causes for: each cause's loss as a share of what it
        # takes from (the round's wall time for throttling, its CPUs' for steal, the threads'
        # cores for foreign work): how much it can have slowed the round.
        self.last_shares: dict[str, float] = {}
        # Throttling that the readings of the round now ending (its start and its end) show to
        # have covered part of rounds before it: the kernel adds a throttle's time when the
        # throttle ends, so a round that ended mid-throttle reads nothing, and a later reading
        # shows the time (see `_trace`). {rounds back: {"throttled": seconds of that round it
        # surely took}}; 1 is the round before this one.
        self.earlier_rounds: dict[int, dict[str, float]] = {}
        self._finished: deque[tuple[float, float]] = deque(maxlen=TRACE_ROUNDS)
        self._readings: deque[Reading] = deque(maxlen=2)  # the last two, newest last

    @property
    def readable(self) -> dict[str, bool]:
        """Which causes this machine reports at all (the rest are unknown)."""
        reading = self.read()
        return {"throttling": reading.throttled_s is not None,
                "steal": reading.steal_s is not None, "clock": reading.mhz is not None}

    def read(self) -> Reading:
        busy = own = None
        system = cpu_times(self._proc)  # one read of /proc/stat for busy and steal alike
        if self._own_pids is not None:
            busy = None if system is None else system[0]
            times = {pid: process_cpu_s(pid, self._proc) for pid in set(self._own_pids())}
            own = {pid: t for pid, t in times.items() if t is not None}
        return Reading(self._clock(), throttled_s(self._stat_files),
                       None if system is None else system[1], mean_mhz(self._sys), busy, own)

    def start(self) -> None:
        self.earlier_rounds = {}
        self._start = self.read()
        self._trace(self._start)  # a throttle that ended between the rounds

    def stop(self) -> dict[str, float]:
        if self._start is None:
            return {}
        before, after = self._start, self.read()
        self._start = None
        self.last_shares = {}
        self._trace(after)
        self._finished.append((before.wall_s, after.wall_s))
        wall = after.wall_s - before.wall_s
        if after.mhz is not None:
            self.mhz_readings.append(after.mhz)
        causes: dict[str, float] = {}
        if wall <= 0:
            return causes
        if before.throttled_s is not None and after.throttled_s is not None:
            lost = after.throttled_s - before.throttled_s
            if lost > self.share * wall:
                causes["throttled"] = lost
                self.last_shares["throttled"] = lost / wall
        if before.steal_s is not None and after.steal_s is not None:
            lost = after.steal_s - before.steal_s
            # The counter moves in whole ticks (1/SC_CLK_TCK s, 10 ms on most kernels), so a
            # round the counter moved by k ticks lost between k-1 and k+1 ticks: only the
            # steal it surely had counts. Measured on the 2-vCPU Zen 3 VM, idle: the counter
            # moves by a tick every few seconds, and the one-tick rounds were a quiet run's
            # most common set-aside cause.
            if lost - self._tick_s > self.share * wall * self._cpus:
                causes["steal"] = lost
                self.last_shares["steal"] = (lost - self._tick_s) / (wall * self._cpus)
        foreign = _foreign_s(before, after)
        if foreign is not None:
            used, ran = foreign
            # Each CPU's and each own process's counter is rounded to a tick on its own. The
            # CPUs the group's threads leave idle take other work without slowing it: only
            # what spills onto the threads' own cores counts, against their capacity.
            spilled = used - (self._cpus + ran) * self._tick_s \
                - (self._cpus - self._threads) * wall
            if spilled > self.share * wall * self._threads:
                causes["foreign"] = used
                self.last_shares["foreign"] = spilled / (wall * self._threads)
        return causes


    def _trace(self, now: Reading) -> None:
        """Trace the throttled time that grew since an earlier reading back into the finished
        rounds it surely covered. A throttle's time is summed over the CPUs' run queues, so it
        lasted at least its growth / CPUs, and it ended between the two readings: whenever it
        ended, it covered [now - growth / CPUs, the earlier reading]. Read at both ends of every
        round, the gap between rounds included, and traced from the last two readings: from the
        last, a throttle that ended in the gap (while the runner moved to the next round) is
        placed as tightly as one that ended in a round; from the one before, the time of run
        queues that ended their throttles apart still adds up."""
        if now.throttled_s is not None:
            for last in self._readings:
                if last.throttled_s is None:
                    continue
                began_by = now.wall_s - (now.throttled_s - last.throttled_s) / self._cpus
                for back, (start, end) in enumerate(reversed(self._finished), 1):
                    overlap = min(end, last.wall_s) - max(start, began_by)
                    if overlap > 0 and overlap > self.share * (end - start):
                        spill = self.earlier_rounds.setdefault(back, {})
                        spill["throttled"] = max(spill.get("throttled", 0.0), overlap)
        self._readings.append(now)


def _foreign_s(before: Reading, after: Reading) -> tuple[float, int] | None:
    """(CPU seconds used by processes other than ours between two readings, how many of ours
    ran), or None when it cannot be read."""
    if None in (before.busy_s, after.busy_s, before.own_s, after.own_s):
        return None
    assert before.own_s is not None and after.own_s is not None
    assert before.busy_s is not None and after.busy_s is not None
    own = {pid: t - before.own_s.get(pid, 0.0) for pid, t in after.own_s.items()}
    steal = (after.steal_s - before.steal_s
             if after.steal_s is not None and before.steal_s is not None else 0.0)
    used = after.busy_s - before.busy_s - steal - sum(own.values())
    return max(0.0, used), sum(1 for t in own.values() if t > 0) + 1


def describe(rounds: dict[int, dict[str, float]]) -> str:
    """'throttled 0.412 s in 7 rounds; steal 0.020 s in 2 rounds' for a row."""
    totals: dict[str, list[float]] = {}
    for causes in rounds.values():
        for name, lost in causes.items():
            totals.setdefault(name, []).append(lost)
    return "; ".join(f"{name} {sum(lost):.3f} s in {len(lost)} round"
                     f"{'s' if len(lost) != 1 else ''}"
                     for name, lost in sorted(totals.items()))
