"""How busy the rest of the machine was while a group of cells was sampled.

Interleaving cancels drift that slows every backend of a group alike: a slower clock, a
neighbour's share of the memory bus. It cannot cancel a process that competes for the *cores*
when the backends use all of them: a two-threaded BLAS call whose second thread loses its core
waits at every barrier and slows far more than a one-threaded loop does, so the ratios between
backends move as well as the times. (Measured on a 2-core VM with a test suite running beside
the sweep: NumPy at n = m = 2048 4.2x slower, Numba 2.6x, torch 2.4x.) No statistic can take
that back out of the samples, but it can be seen: every row records `foreign_load`, the CPU
time that anything other than qkbench's own processes used while its group sampled, in cores
(0.5 = half a core busy on average), hypervisor steal time included. `qkbench run` warns when
it is high and `compare` notes it next to a verdict.

Linux only (it reads /proc); elsewhere the figure is None.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# Above this many cores of other work during a group, `run` and `compare` point it out. The
# kernel charges CPU time by sampling at each clock tick (100 Hz), so a group that samples for
# a fraction of a second reads up to about 0.2 cores on a quiet machine; one competing busy
# process reads about 1.
BUSY_CORES = 0.5

_PROC = Path("/proc")


def ticks_per_second() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


def cpu_times(proc: Path = _PROC) -> tuple[float, float | None] | None:
    """(busy, steal): CPU seconds all CPUs have spent busy since boot (steal included) and
    stolen by the hypervisor (None on kernels before 2.6.11, which lack the field), from
    /proc/stat's first line; None where it cannot be read. The one reader of that line: the
    foreign load and the machine check's causes count the same ticks."""
    try:
        fields = (proc / "stat").read_text().splitlines()[0].split()
        # user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
        # already counted in user, so it is not added twice.
        values = [int(v) for v in fields[1:9]]
    except (OSError, IndexError, ValueError):
        return None
    if not fields or fields[0] != "cpu" or len(values) < 7:
        return None
    steal = values[7] if len(values) > 7 else None
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    busy = user + nice + system + irq + softirq + (steal or 0)
    tick = ticks_per_second()
    return busy / tick, None if steal is None else steal / tick


def system_busy_s(proc: Path = _PROC) -> float | None:
    """CPU seconds all CPUs have spent busy since boot (steal included), or None."""
    times = cpu_times(proc)
    return None if times is None else times[0]


def process_cpu_s(pid: int, proc: Path = _PROC) -> float | None:
    """CPU seconds (user + system, all threads) a process has used, or None if it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return (int(fields[11]) + int(fields[12])) / ticks_per_second()  # utime, stime
    except (IndexError, ValueError):
        return None


class LoadMeter:
    """Measures, over a stretch of time, the CPU used by processes other than `own_pids()`.

    `own_pids` is asked at the start and at the end, so a worker restarted in between is
    counted from its start. A process of ours that died in between takes its CPU time with
    it, which can only overstate the foreign load, never hide it.
    """

    def __init__(self, own_pids: Callable[[], Iterable[int]], proc: Path = _PROC,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._own_pids, self._proc, self._clock = own_pids, proc, clock
        self._start: tuple[float, float, dict[int, float]] | None = None

    def _own_cpu(self) -> dict[int, float]:
        times = {pid: process_cpu_s(pid, self._proc) for pid in set(self._own_pids())}
        return {pid: t for pid, t in times.items() if t is not None}

    def start(self) -> None:
        busy = system_busy_s(self._proc)
        self._start = None if busy is None else (self._clock(), busy, self._own_cpu())

    def stop(self) -> float | None:
        """Cores' worth of foreign work since `start()`: None when it cannot be known."""
        if self._start is None:
            return None
        started, busy_before, own_before = self._start
        busy_after, wall = system_busy_s(self._proc), self._clock() - started
        if busy_after is None or wall <= 0:
            return None
        own_after = self._own_cpu()
        own = sum(t - own_before.get(pid, 0.0) for pid, t in own_after.items())
        # Tick counts are samples (see BUSY_CORES); a small negative difference is noise, not load.
        return max(0.0, (busy_after - busy_before - own) / wall)
