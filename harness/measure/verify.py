"""In a worker, after sampling: was the timed work real? (docs/correctness.md)

The checks a worker's session runs when the runner asks `("verify", once)`: untouched inputs,
a timed call's own answer, idle after sync(), the fresh input set, work hidden in to_numpy(),
and replayed answers, each reading the cell's state (`CellUnderTest`). The checks' names,
statuses and the input and idle watches are `qkbench.measure.checks`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from qkbench.machine.cpu_quota import affinity_cores
from qkbench.measure import checks, inputs
from qkbench.measure.cell import (CellFigures, CellUnderTest, check_agreement, failed, some_rows,
                                  timed_call)

# An honest CPU backend's to_numpy takes at most about a copy of S plus a library's fixed cost
# of handing an array over; allowed: this many timed calls, this many copies, and this floor
# for the fixed cost (measured: jax-cpu's np.asarray of a 40×27 bfloat16 result, through
# ml_dtypes, 0.11 ms; of a float32 one, 6 µs). Hidden work below the floor is left to the
# speed check, which a timed call that skips the product meets.
TO_NUMPY_CALLS = 4
TO_NUMPY_COPIES = 4
TO_NUMPY_FLOOR_S = 1e-3
# A call on inputs no cached answer fits may take this many of the timed calls just before it
# (plus the floor: a Python call, a sync and an allocation) before the timed ones count as
# replayed: an honest call whose inputs come from memory rather than cache is a few times
# slower at worst (a memory-bound product at DRAM versus last-level-cache bandwidth, on the
# VM about 10x apart).
REPLAY_FACTOR = 20.0
REPLAY_FLOOR_S = 100e-6



def verify(cell: CellUnderTest, backend: Any, once: bool) -> CellFigures:
    """After sampling: the checks that the timed calls did the work they were timed on, in the
    order that names the root cause (changed inputs make every later answer wrong). Raises
    CellFailure naming the check; returns the figures of the checks that passed. `once`: in
    one of the cell's workers, also the checks whose cost is not per process."""
    timer = cell.timer
    started = time.perf_counter()
    figures = CellFigures()
    changed = cell.guard.changed(backend)
    if changed:
        raise failed("untouched_inputs", changed)
    kept, timer.kept = timer.kept, None  # None only when the cell was never sampled
    if once:
        # Before anything waits for an answer: work a backend left running is then still
        # queued. One more block as the timed ones are (a cheat's leftover grows with it),
        # lasting at least as long as honest idle threads may spin; then watch.
        allowance = checks.spin_allowance_s() or 0.0
        calls = cell.calls * max(1, math.ceil(allowance * affinity_cores()
                                              / max(cell.block_s, 1e-9)))
        _, block_s = timer.time_block(calls)
        timer.kept = None
        idle = checks.idle_after_sync(backend, block_s)
        figures.merge({"cpu_after_sync_s": idle.cpu_s, "device_after_sync_s": idle.device_s})
        if idle.reason:
            raise failed("idle_after_sync", idle.reason, figures)
    if kept is not None:
        # The first worker checks every reference row; the others a random share of them (the
        # backend cannot know which), so the cost stays that of about one check.
        reference = cell.reference if once else some_rows(cell.reference)
        check_agreement(cell.host_answer(kept), reference, cell.s_shape, cell.plan.dtype,
                        cell.precision, CellFigures(), "timed_call")
        del kept
    if once:
        host = _check_fresh(cell, backend)
        deferred = _deferred_work(cell, backend, host)
        if deferred:
            raise failed("to_numpy", deferred, figures)
        replayed = _replayed(cell, backend, figures)
        if replayed:
            raise failed("replay", replayed, figures)
    figures.verify_s = time.perf_counter() - started
    return figures


def _deferred_work(cell: CellUnderTest, backend: Any, host: Any) -> str | None:
    """Why the cell's answers seem computed in `to_numpy` rather than in the timed call.

    Only for CPU backends in the kernel phase, where `to_numpy` is not timed and has no
    transfer to make: it may at most copy S, and the timed call must at least write S, so
    an honest `to_numpy` never takes much longer than a call plus a copy. A lazy backend's
    takes the whole product. The fastest of the cell's (three) conversions is compared,
    so one preempted conversion on a busy machine is not mistaken for work."""
    if (cell.plan.phase != "kernel" or backend.device != "cpu"
            or not isinstance(host, np.ndarray) or len(cell.to_host_s) < 2):
        return None
    copies = []
    for _ in range(3):
        start = time.perf_counter()
        host.copy()
        copies.append(time.perf_counter() - start)
    per_call = cell.fastest_call_s
    allowed = (TO_NUMPY_CALLS * per_call + TO_NUMPY_COPIES * min(copies)
               + TO_NUMPY_FLOOR_S)
    fastest = min(cell.to_host_s)
    if fastest <= allowed:
        return None
    return (f"to_numpy() took at least {fastest:.3g} s on each of {len(cell.to_host_s)} "
            f"answers, where a timed call takes {per_call:.3g} s and a copy of S "
            f"{min(copies):.3g} s: the work is done outside the timed call")


def _replayed(cell: CellUnderTest, backend: Any, figures: CellFigures) -> str | None:
    """Why the timed calls seem to replay answers rather than compute them: a call on new
    inputs (which no remembered answer fits) takes many times what the timed calls just
    before it took.

    Side by side: each new-input call follows a block of timed calls at once, so both
    meet the same machine, with the thread pool awake (on a busy machine, waking sleeping
    pool threads alone can cost tens of milliseconds). The closer ratio of two sets is
    compared, so one preempted call is not mistaken for a replay. The new inputs are the
    fresh set negated, and with its rows rotated: values no fingerprint of the timed
    inputs matches, at the cost of copies instead of new random numbers. It costs about
    four calls, whatever the size.

    CPU backends only: a GPU backend may legitimately pay for new inputs (a CUDA graph
    captured for the timed buffers is captured again), and a GPU's datasheet peak is
    always at hand for the speed check."""
    timer = cell.timer
    if backend.device != "cpu":
        return None
    shape = inputs.load(inputs.fresh_folder(cell.folder))
    q, k = inputs.cast(shape.q, cell.plan.dtype), inputs.cast(shape.k, cell.plan.dtype)
    new_sets = [(-q, k), (np.roll(q, 1, axis=-2), np.roll(k, 1, axis=-2))]  # rows, any rank
    # Prepared before any timing: nothing but the call itself sits between block and call.
    prepared = [timed_call(backend, cell.plan.phase, [new]) for new in new_sets]
    ratios = []
    warm_calls = max(1, cell.calls // 4)  # enough to wake the pool and time a call
    for fn, arg_sets, _ in prepared:
        _, block_s = timer.time_block(warm_calls)
        start = time.perf_counter()
        fn(*arg_sets[0])
        backend.sync()
        new_s = time.perf_counter() - start
        timed_s = block_s / warm_calls
        ratios.append((new_s / max(timed_s, 1e-12), new_s, timed_s))
    timer.kept = None
    ratio, new_s, timed_s = min(ratios)
    figures.new_inputs_ratio = ratio
    if new_s <= REPLAY_FACTOR * timed_s + REPLAY_FLOOR_S:
        return None
    return (f"a call on new inputs took {new_s:.3g} s, {ratio:,.0f}× the {timed_s:.3g} s of "
            f"the timed calls just before it (the closest of {len(ratios)} sets): the timed "
            "calls did not compute their answers")


def _check_fresh(cell: CellUnderTest, backend: Any) -> Any:
    """S of a second, independently seeded input set: an answer remembered from the timed
    inputs (or computed once and replayed) cannot agree with its reference."""
    shape = inputs.load(inputs.fresh_folder(cell.folder))
    host = [(inputs.cast(shape.q, cell.plan.dtype), inputs.cast(shape.k, cell.plan.dtype))]
    fn, arg_sets, to_host = timed_call(backend, cell.plan.phase, host)
    backend.sync()
    result = fn(*arg_sets[0])
    backend.sync()
    host = cell.host_answer(result, to_host)
    check_agreement(host, shape.reference, cell.s_shape, cell.plan.dtype,
                     cell.precision, CellFigures(), "fresh_inputs")
    return host
