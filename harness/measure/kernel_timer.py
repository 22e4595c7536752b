"""In the worker: time one backend's calls — first call, warm-up, block size, blocks.

`KernelTimer` runs inside a worker process, next to the backend, driven by an injectable clock
so it can be tested without sleeping. It times the first call on its own (JIT compilation,
CUDA context and library handles land there, not in the samples), warms up, picks how many
calls one sample holds, and times blocks of them. The main process's side — asking every
backend of a group for samples in rounds and deciding when each has enough — is
`qkbench.measure.timing`; the module docstring there says why blocks, and why `sync()` sits
inside the timed region.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

from qkbench.measure.timing import MAX_CALLS_PER_SAMPLE, Clock, Sample


class DeviceClock:
    """What a GPU backend's `device_clock()` returns: events on the stream its work runs on.

    `start()`/`stop()` record events (asynchronous); `elapsed_s()` waits for the stop event and
    returns the seconds between the two. `flush()` enqueues a write of at least twice the
    device's last cache level; `capture(block)` returns a function replaying everything
    `block()` launches as one CUDA graph, or None when the library cannot capture.
    """

    name = "cuda-events"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def elapsed_s(self) -> float:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def capture(self, block: Callable[[], None]) -> Callable[[], None] | None:
        return None


class KernelTimer:
    """Times `fn(q, k)` (followed by `sync()`) for one backend on one cell's inputs.

    `arg_sets` holds one (q, k) pair for a warm cache, or several copies for a cold one: the
    block then rotates through them, so each call reads inputs that the previous calls pushed
    out of the cache, and no eviction work sits inside the timed region.

    Each block keeps the answer of one of its calls (`kept`), as pytest-benchmark's timed call
    returns its result: the worker checks
    it after timing, so an answer that degrades while it is timed cannot hide behind a correct
    first call. Which call is drawn at random before the clock starts, so a backend cannot
    know which of its answers will be looked at; the previous block's answer is dropped before
    the clock starts too. While the kept answer is alive, the calls after it in the block need
    a second output buffer: the workers' allocator keeps freed memory mapped so that buffer is
    not faulted in afresh in every block (qkbench.machine.allocator).

    With a `device_clock`, each block is timed by its events and the host time is kept
    beside it; `flush_between_calls` flushes the device cache before every call, outside the
    events (a cold cache from one input set); `graphs` captures each block size once as a CUDA
    graph and replays it, so a launch-bound call is measured without its launch cost.
    """

    def __init__(self, fn: Callable[[Any, Any], Any], arg_sets: list[tuple[Any, Any]],
                 sync: Callable[[], None], clock: Clock = time.perf_counter,
                 device_clock: DeviceClock | None = None, flush_between_calls: bool = False,
                 graphs: bool = False) -> None:
        if not arg_sets:
            raise ValueError("KernelTimer needs at least one set of arguments")
        if (flush_between_calls or graphs) and device_clock is None:
            raise ValueError("flushing and graphs need a device clock")
        self._fn, self._sets, self._sync, self._clock = fn, arg_sets, sync, clock
        self._draw = random.Random()  # seeded from the OS: not predictable by the backend
        self.kept: Any = None
        self._device, self._flush = device_clock, flush_between_calls
        # A flushed cell times each call alone, between flushes: there is no block to capture.
        self._graphs = graphs and not flush_between_calls
        self._graph: tuple[int, Callable[[], None]] | None = None  # (calls, replay)

    def first_call(self) -> tuple[Any, float]:
        """The very first call and its time. Its result is what the agreement check sees."""
        q, k = self._sets[0]
        self._sync()
        start = self._clock()
        result = self._fn(q, k)
        self._sync()
        return result, self._clock() - start

    def time_block(self, calls: int) -> tuple[float, float]:
        """(start time, total seconds) of `calls` back-to-back calls, synced at the end; the
        seconds come from the device clock when there is one."""
        start, primary, _ = self.time_block_both(calls)
        return start, primary

    def time_block_both(self, calls: int) -> tuple[float, float, float | None]:
        """(start time, total seconds by the primary clock, total by the host clock or None
        when host time would include work that is not the calls, such as cache flushes)."""
        keep = self._draw.randrange(calls)
        self.kept = None
        if self._flush:
            return self._flushed_block(calls, keep)
        fn, sync, clock, sets, device = self._fn, self._sync, self._clock, self._sets, self._device
        replay = self._replay(calls) if self._graphs else None
        kept = None  # a replayed graph's outputs are the graph's own: no answer is kept
        sync()
        start = clock()
        if device is not None:
            device.start()
        if replay is not None:
            replay()
        elif len(sets) == 1:
            # The warm loop calls fn directly with local names: its overhead per call is one
            # loop step and one call, which is what the tiny-op overhead budget allows. The
            # kept call splits the loop in two rather than adding a test to every step.
            q, k = sets[0]
            for _ in range(keep):
                fn(q, k)
            kept = fn(q, k)
            for _ in range(calls - keep - 1):
                fn(q, k)
        else:
            count = len(sets)
            for i in range(calls):
                q, k = sets[i % count]
                if i == keep:
                    kept = fn(q, k)
                else:
                    fn(q, k)
        if device is not None:
            device.stop()
        sync()
        host = clock() - start
        self.kept = kept
        if device is None:
            return start, host, None
        return start, device.elapsed_s(), host

    def _flushed_block(self, calls: int, keep: int) -> tuple[float, float, None]:
        """Each call after a flush of the device cache, timed by events recorded after the
        flush: the flush is queued before the start event, so none of it is in the time."""
        device, sets, sync = self._device, self._sets, self._sync
        assert device is not None
        sync()
        start, total, kept = self._clock(), 0.0, None
        for i in range(calls):
            q, k = sets[i % len(sets)]
            device.flush()
            device.start()
            if i == keep:
                kept = self._fn(q, k)
            else:
                self._fn(q, k)
            device.stop()
            total += device.elapsed_s()
        sync()
        self.kept = kept
        return start, total, None

    def _replay(self, calls: int) -> Callable[[], None] | None:
        """The block of `calls` calls as one captured graph, captured once per block size
        (only the latest is kept: each capture holds its own outputs in device memory)."""
        if self._graph is not None and self._graph[0] == calls:
            return self._graph[1]
        assert self._device is not None
        sets, fn = self._sets, self._fn

        def block() -> None:
            for i in range(calls):
                fn(*sets[i % len(sets)])

        self._sync()
        replay = self._device.capture(block)
        if replay is None:
            self._graphs = False  # the library cannot capture: time the plain loop
            return None
        self._graph = (calls, replay)
        return replay

    @property
    def uses_graphs(self) -> bool:
        return self._graphs

    def launch_overhead(self, repeats: int = 21) -> float:
        """Median host time to launch one call without waiting for it: what an asynchronous
        backend costs per call when the device is idle. For a cell this short or shorter the
        samples measure the launch queue, not the kernel (graphs remove it)."""
        q, k = self._sets[0]
        times = []
        for _ in range(repeats):
            self._sync()
            start = self._clock()
            self._fn(q, k)
            times.append(self._clock() - start)
        self._sync()
        return sorted(times)[len(times) // 2]

    def calibrate(self, min_sample_s: float, warmup_s: float) -> tuple[int, float]:
        """Warm up for at least `warmup_s`; return the smallest power-of-two block size whose
        block lasts at least `min_sample_s` (1 for calls slow enough alone) and the time of
        the last block of that size."""
        calls, spent = 1, 0.0
        while True:
            _, elapsed = self.time_block(calls)
            spent += elapsed
            if elapsed < min_sample_s and calls < MAX_CALLS_PER_SAMPLE:
                calls = min(calls * 2, MAX_CALLS_PER_SAMPLE)
            elif spent >= warmup_s:
                return calls, elapsed

    def samples(self, count: int, calls: int, round_number: int,
                wall_limit_s: float = math.inf) -> list[Sample]:
        """Up to `count` timed blocks; fewer when `wall_limit_s` of wall time has passed (at
        least one block is always taken). Why a wall limit: `count` is planned from the blocks'
        usual length, and a machine that turns busy mid-request (threads of an oversubscribed
        BLAS waiting out each other's time slices) can stretch a few thousand microsecond
        blocks by 100x, into the cell's hard time limit; returning early keeps a healthy cell
        from being recorded as a timeout, while a call that hangs still meets that limit."""
        out = []
        began = self._clock()
        for _ in range(count):
            start, elapsed, host = self.time_block_both(calls)
            out.append(Sample(round_number, start, elapsed / calls, calls,
                              None if host is None else host / calls))
            if self._clock() - began >= wall_limit_s:
                break
        return out
