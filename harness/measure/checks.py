"""In the worker after timing: did the backend do the work it was timed on?

The first call's agreement (`qkbench.measure.agreement`) says a backend *can* compute S. These
checks, run once per cell after its samples are taken and outside the timed region, say that
the timed calls did: the inputs it was timed on are unchanged, a timed call's own answer
agrees, it gets a second, fresh input set right, and nothing of its work was still running
once `sync()` returned. docs/correctness.md describes each check and what it catches.

This module names the checks (one source of truth for the `failed_check` column and the start
of each reason) and holds the two that need more than an agreement: untouched inputs and
idleness after `sync()`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from qkbench.backends.gpu_support import device_synchronizers
from qkbench.machine.cpu_quota import affinity_cores

# check → (the words that open its failure's reason, the status a failure gets). A cheat is
# never `error` or `crashed`: those say the harness could not find out, these say it did.
CHECKS: dict[str, tuple[str, str]] = {
    "first_call": ("first call", "mismatch"),
    "untouched_inputs": ("untouched inputs", "tampered"),
    "timed_call": ("timed call", "mismatch"),
    "idle_after_sync": ("still running after sync()", "unsynced"),
    "fresh_inputs": ("fresh inputs", "mismatch"),
    "to_numpy": ("work done in to_numpy()", "unsynced"),
    "replay": ("replayed answers", "implausible"),
    "speed": ("implausible speed", "implausible"),
}


def reason(check: str, detail: str) -> str:
    return f"{CHECKS[check][0]}: {detail}"


def status(check: str) -> str:
    return CHECKS[check][1]


# ---------------------------------------------------------------- untouched inputs


def host_view(backend: Any, array: Any) -> np.ndarray | None:
    """A prepared array as host bits to compare, or None when the backend's `to_numpy` cannot
    give one (its inputs are then checked on the host side only)."""
    if isinstance(array, np.ndarray):
        return array
    try:
        view = backend.to_numpy(array)
    except Exception:
        return None
    return view if isinstance(view, np.ndarray) else None


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality: NaN equals the same NaN, and -0.0 differs from 0.0 (a backend
    that rewrote its input with equal-comparing values still rewrote it)."""
    if a.shape != b.shape or a.dtype.itemsize != b.dtype.itemsize:
        return False
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(np.ascontiguousarray(a).view(unsigned),
                               np.ascontiguousarray(b).view(unsigned)))


@dataclass
class InputGuard:
    """What a cell's inputs were before timing, to say afterwards whether they still are.

    Host arrays (what `prepare` was given, or what every end-to-end call is given) are compared
    with the pristine cast of the float64 master, which costs no copy per input set. Prepared
    arrays that are not the host arrays (device copies, other layouts) are compared with a
    snapshot taken through the backend's `to_numpy` right after `prepare`.
    """

    pristine: tuple[np.ndarray, np.ndarray]
    host_sets: list[tuple[np.ndarray, np.ndarray]]
    snapshots: list[tuple[int, int, Any, np.ndarray]]  # (set, 0 = Q / 1 = K, array, copy)

    @classmethod
    def take(cls, backend: Any, pristine: tuple[np.ndarray, np.ndarray],
             host_sets: list[tuple[np.ndarray, np.ndarray]],
             prepared_sets: list[tuple[Any, Any]]) -> InputGuard:
        snapshots = []
        for index, (host, prepared) in enumerate(zip(host_sets, prepared_sets)):
            for which in (0, 1):
                array = prepared[which]
                if isinstance(array, np.ndarray) and np.may_share_memory(array, host[which]):
                    continue  # the host comparison covers it
                view = host_view(backend, array)
                if view is not None:
                    snapshots.append((index, which, array, np.array(view, copy=True)))
        return cls(pristine, host_sets, snapshots)

    def changed(self, backend: Any) -> str | None:
        """Which input changed in place since `take`, or None."""
        names = ("Q", "K")
        for index, host in enumerate(self.host_sets):
            for which in (0, 1):
                if not same_bits(host[which], self.pristine[which]):
                    return (f"{names[which]} (host array{_copy_note(index, self.host_sets)}) "
                            "was changed in place while it was timed")
        for index, which, array, before in self.snapshots:
            view = host_view(backend, array)
            if view is None or not same_bits(view, before):
                return (f"prepared {names[which]}{_copy_note(index, self.host_sets)} was "
                        "changed in place while it was timed")
        return None


def _copy_note(index: int, sets: list[Any]) -> str:
    return f", copy {index + 1} of {len(sets)}" if len(sets) > 1 else ""


# ---------------------------------------------------------------- idle after sync()

# How long, per idle thread, an honest thread pool may keep spinning after a call. Spin limits
# are settings of each library (qkbench.machine.idle_threads sets them short); the allowance is
# read from the settings in force, so a user's own values are honoured, not guessed.
# OpenBLAS waits 2^OPENBLAS_THREAD_TIMEOUT cycles; at the slowest clock a server or laptop
# core runs under load (1 GHz) a cycle is at most 1 ns.
SLOWEST_CYCLE_S = 1e-9
OPENBLAS_DEFAULT_TIMEOUT = 28  # OpenBLAS's own default when the variable is unset
# GNU OpenMP counts GOMP_SPINCOUNT spins of a load and a `pause`; `pause` alone takes up to
# about 140 cycles (Skylake and later), so 150 ns per spin at 1 GHz bounds it (measured on
# the 2-vCPU EPYC VM: 300000 spins took about 8 ms, 27 ns each).
SPIN_S = 150e-9
GOMP_DEFAULT_SPINCOUNT = 300_000
KMP_DEFAULT_BLOCKTIME_MS = 200  # Intel OpenMP
# Work of the probe itself while it watches (waking from sleep, reading clocks): tens of
# microseconds; this leaves room for a stray page fault or a garbage collection.
OWN_CPU_S = 1e-3
# While watching, a tick in which the process used less than this share of one core counts
# as quiet: the probe's own clock reads are far below it, a spinning or computing thread far
# above it.
QUIET_SHARE = 0.1


def spin_allowance_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """The longest one idle thread of an honest pool may spin after a call, summed over the
    pools a worker may load (OpenBLAS, GNU and Intel OpenMP), from the settings in force;
    None when a setting keeps idle threads spinning for ever (then CPU time cannot tell)."""
    if environ.get("OMP_WAIT_POLICY", "").strip().lower() == "active":
        return None
    try:
        timeout = int(environ.get("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_DEFAULT_TIMEOUT))
        openblas = 2.0 ** min(max(timeout, 4), 30) * SLOWEST_CYCLE_S  # OpenBLAS clamps to 4..30
        spins = environ.get("GOMP_SPINCOUNT", str(GOMP_DEFAULT_SPINCOUNT)).strip().lower()
        blocktime = environ.get("KMP_BLOCKTIME", str(KMP_DEFAULT_BLOCKTIME_MS)).strip().lower()
        if "infinite" in (spins, blocktime):
            return None
        gomp = _count(spins) * SPIN_S
        kmp = float(blocktime) * 1e-3
    except ValueError:
        return None  # a setting we cannot read: say so rather than guess
    return openblas + gomp + kmp


def _count(text: str) -> float:
    """GOMP_SPINCOUNT takes an optional k/M/G suffix."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:], 1.0)
    return float(text[:-1] if scale != 1.0 else text) * scale


@dataclass(frozen=True)
class IdleVerdict:
    cpu_s: float | None  # CPU seconds the worker used after sync() returned (None: not watched)
    watched_s: float  # how long it was watched
    allowance_s: float | None  # CPU seconds honest idle threads may use in that time
    device_s: float | None  # how long a device-wide synchronize waited (None: no device)
    reason: str | None  # None: idle


def quiet_span_s(cores: int) -> float:
    """How long the process must stay quiet to count as idle: a thread that is runnable waits
    at most one scheduling period for a core, which Linux's CFS sets to 6 ms × (1 + log2 of
    the cores, at most 8 of them counted); a thread left computing is then seen."""
    return 6e-3 * (1 + math.log2(min(max(cores, 1), 8)))


def watch_cpu(allowance_s: float, cores: int, clock: Callable[[], float] = time.perf_counter,
              cpu: Callable[[], float] = time.process_time,
              sleep: Callable[[float], None] = time.sleep) -> tuple[float, float, bool]:
    """(CPU seconds used, seconds watched, busy?) after a sync() that has just returned.

    The process's CPU time (every thread's, as the kernel counts it) is read in ticks. Honest
    pools spin for at most `allowance_s` each, so `cores` of them use at most `cores ·
    allowance_s` of CPU whatever the wall clock does: the process is busy once it used more
    than that. It is idle once it stayed quiet for `quiet_span_s` after the spins had time to
    end. The watch lasts at most long enough for a single thread, computing all along, to use
    more than the allowance, so work left on one thread cannot outlast it unseen."""
    budget = cores * allowance_s + OWN_CPU_S
    tick = max(1e-3, allowance_s / 4)
    quiet = quiet_span_s(cores)
    deadline = max(2 * budget, allowance_s + quiet) + tick
    start_wall, start_cpu = clock(), cpu()
    readings = [(0.0, start_cpu)]
    while True:
        sleep(tick)
        now, used = clock() - start_wall, cpu()
        readings.append((now, used))
        if used - start_cpu > budget:
            return used - start_cpu, now, True
        if now >= allowance_s + quiet:
            since = now - quiet
            first = next(c for t, c in readings if t >= since)
            if used - first < QUIET_SHARE * quiet:
                return used - start_cpu, now, False
        if now >= deadline:
            return used - start_cpu, now, False


# A thread may be runnable for this long after sync() without using more CPU than idle pools
# may, on a machine so oversubscribed that it barely gets a core; past it, the watch gives up
# (not busy: nothing was seen using CPU it may not use).
WATCH_CAP_S = 0.5


def thread_states() -> dict[int, tuple[str, int]] | None:
    """tid → (scheduler state, nanoseconds on a CPU) for this process's threads, from Linux's
    /proc; None where it cannot be read."""
    base = "/proc/self/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return None
    out = {}
    for tid in tids:
        try:
            with open(f"{base}/{tid}/stat") as stat_file:
                stat = stat_file.read()
            with open(f"{base}/{tid}/schedstat") as sched_file:
                on_cpu_ns = int(sched_file.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between the listing and the read
        out[int(tid)] = (stat[stat.rindex(")") + 2], on_cpu_ns)
    return out or None


def watch_threads(allowance_s: float, cores: int, clock: Callable[[], float] = time.perf_counter,
                  states: Callable[[], dict[int, tuple[str, int]] | None] = thread_states,
                  sleep: Callable[[float], None] = time.sleep,
                  me: int | None = None) -> tuple[float, float, bool] | None:
    """(CPU seconds the other threads used, seconds watched, busy?) after a sync() that has
    just returned, judged per thread; None where threads cannot be read (see `watch_cpu`).

    Every thread but the one that called sync() is followed. An honest pool's idle thread
    spins for at most `allowance_s` of CPU and then sleeps, however long it waits for a core
    on a busy machine; a thread that uses more than that after sync() is doing work that the
    timed block did not wait for. The process is idle once no other thread is runnable in two
    ticks in a row after the spins had time to end. Per thread, and by CPU used rather than
    by wall time, so a machine oversubscribed by other processes slows the verdict down but
    does not change it."""
    me = threading.get_native_id() if me is None else me
    start = states()
    if start is None:
        return None
    tick = max(1e-3, allowance_s / 4)
    limit_ns = (allowance_s + OWN_CPU_S) * 1e9
    start_wall, calm = clock(), 0
    while True:
        sleep(tick)
        now, current = clock() - start_wall, states() or {}
        used = {tid: ns - start.get(tid, ("", 0))[1] for tid, (_, ns) in current.items()
                if tid != me}
        total = sum(max(ns, 0) for ns in used.values()) / 1e9
        if any(ns > limit_ns for ns in used.values()):
            return total, now, True
        runnable = any(state == "R" for tid, (state, _) in current.items() if tid != me)
        calm = 0 if runnable else calm + 1
        if (now >= allowance_s and calm >= 2) or now >= WATCH_CAP_S:
            return total, now, False


def device_synchronize_s() -> tuple[float, float] | None:
    """A device-wide synchronize of every CUDA library this process initialised, now and then
    again at once: (how much longer the first waited, the second's time: the cost of one with
    nothing queued), or None when no such library runs here. Device-wide: work the backend queued on a
    stream of its own, which its own `sync()` may skip, is waited for too."""
    syncs = device_synchronizers()
    if not syncs:
        return None
    waits = []
    for _ in range(2):
        start = time.perf_counter()
        for synchronize in syncs:
            synchronize()
        waits.append(time.perf_counter() - start)
    return max(0.0, waits[0] - waits[1]), waits[1]


# A device synchronize waiting longer than this share of the probe block means that much of
# the block's work was not inside its time; below it, launch jitter and driver round-trips.
DEVICE_LEFTOVER_SHARE = 0.1
# ... and longer than this many idle synchronizes (a driver round-trip, microseconds).
DEVICE_IDLE_FACTOR = 10.0


def idle_after_sync(backend: Any, block_s: float, environ: Mapping[str, str] = os.environ,
                    watch: Callable[..., tuple[float, float, bool] | None] = watch_threads
                    ) -> IdleVerdict:
    """Right after a timed block's `sync()` returned: is anything of it still running?"""
    pending = _pending(backend)
    device = device_synchronize_s()
    device_s = None
    if device is not None:
        leftover, idle = device
        device_s = leftover
        if leftover > max(DEVICE_LEFTOVER_SHARE * block_s, DEVICE_IDLE_FACTOR * idle):
            return IdleVerdict(None, 0.0, None, device_s,
                               f"the device was busy for another {leftover:.3g} s after a "
                               f"{block_s:.3g} s block and its sync() (work on another stream?)")
    if pending:
        return IdleVerdict(None, 0.0, None, device_s,
                           "the backend reports queued device work after its own sync()")
    allowance = spin_allowance_s(environ)
    if allowance is None:
        return IdleVerdict(None, 0.0, None, device_s, None)
    cores = affinity_cores()  # idle threads may spin on every core the mask allows
    per_thread = watch(allowance, cores)
    if per_thread is not None:
        used, watched, busy = per_thread
        budget = allowance + OWN_CPU_S
        what = f"a thread used more than the {budget:.3g} s of CPU an idle pool's thread may spin"
    else:
        used, watched, busy = watch_cpu(allowance, cores)
        budget = cores * allowance + OWN_CPU_S
        what = f"more than the {budget:.3g} s idle thread pools may spin on {cores} core(s)"
    if busy:
        return IdleVerdict(used, watched, budget, device_s,
                           f"other threads used {used:.3g} s of CPU in the {watched:.3g} s "
                           f"after a block's sync() returned, and {what} (work on a thread "
                           "the backend does not wait for?)")
    return IdleVerdict(used, watched, budget, device_s, None)


def _pending(backend: Any) -> bool:
    """The backend's own answer (Backend.pending), for backends that can tell; a backend whose
    hook fails or cannot tell is judged by the harness's probes alone."""
    try:
        return backend.pending() is True
    except Exception:
        return False
