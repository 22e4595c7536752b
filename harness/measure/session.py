"""In a worker: one backend's session — open, set up a cell (inputs, prepare, first call,
agreement, warm-up), sample, the checks after timing, the machine check, release. The checks
themselves are `qkbench.measure.verify`; the process around the session is
`qkbench.measure.worker`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from qkbench.machine.cpu_quota import cpu_limits
from qkbench.measure import checks, inputs
from qkbench.measure import verify as checks_after_timing
from qkbench.measure.cell import (
    CellFailure,
    CellFigures,
    CellPlan,
    CellUnderTest,
    check_agreement,
    cold_copies,
    device_clock_of,
    precision_of,
    problem_of,
    safe_info,
    some_rows,
    telemetry,
    timed_call,
)
from qkbench.measure.kernel_timer import KernelTimer


class Session:
    """The worker's state: one backend, and the cell set up last."""

    def __init__(self, backend_path: str, options: dict[str, Any]) -> None:
        from qkbench.backends.registry import load_class

        self.backend = load_class(backend_path)(**options)
        self.cell: CellUnderTest | None = None  # from setup to release
        self.threads_set = False  # this session set the backend's threads: undo on release
        self.cell_threads: int | None = None  # the threads the cell asked for
        # One machine check per thread count a cell asked for: its best time is only
        # comparable with readings taken on as many threads.
        self.canaries: dict[int | None, Any] = {}
        self.check_margin = 0.0

    def handle(self, request: tuple[Any, ...]) -> Any:
        kind = request[0]
        if kind == "open":
            return self.open()
        if kind == "load":
            return self.backend.load()
        if kind == "setup":
            try:
                return self.setup(request[1], request[2], *request[3:])
            except BaseException:
                self.release()  # a failed cell leaves no thread limit or arrays behind
                raise
        if kind == "sample":
            return self.sample(*request[1:])
        if kind == "check":
            return self.check()
        if kind == "verify":
            assert self.cell is not None, "verify before setup"
            return checks_after_timing.verify(self.cell, self.backend, request[1])
        if kind == "release":
            return self.release()
        raise ValueError(f"unknown request {kind!r}")

    def open(self) -> dict[str, Any]:
        return {"unavailable": self.backend.unavailable()}

    def setup(self, shape_folder: str, plan: CellPlan, first: bool = True) -> CellFigures:
        """Set the cell up. The cell's `first` worker checks every reference row of the first
        call's answer; the others, which run the same code on the same inputs, a random share
        of them (as after timing), so the check costs about one full check per cell.

        Only the first worker warms up for `plan.warmup_s`; the others run their calibration
        blocks alone (at least `min_sample_s` of calls, touching every buffer a sample uses):
        what a longer warm-up would leave behind in them (a raised clock, warm caches) is gone
        by their first turn, which comes after every other backend's turn of the round."""
        backend = self.backend
        clock = time.perf_counter
        started = clock()
        threads = plan.threads if plan.threads is not None else quota_threads(backend)
        backend.set_threads(threads)
        self.threads_set = threads is not None
        self.cell_threads = plan.threads
        self.check_margin = plan.check_margin
        shape = inputs.load(Path(shape_folder))
        problem = problem_of(shape)
        backend.set_problem(problem)
        q, k = inputs.cast(shape.q, plan.dtype), inputs.cast(shape.k, plan.dtype)
        precision = precision_of(backend, plan.dtype)
        # Device events time the kernel phase only: end to end, host work is part of the time.
        device_clock = device_clock_of(backend) if plan.phase == "kernel" else None
        # A cold cache on a device with its own clock: one input set and an L2 flush before
        # each call, outside the events. Elsewhere: a rotation through input copies.
        flush = plan.cache == "cold" and device_clock is not None
        copies = 1
        if plan.cache == "cold" and not flush:
            copies = cold_copies(q.nbytes + k.nbytes, backend.cache_bytes() or plan.host_cache_bytes)
        self._check_device_memory(q, k, copies, plan)
        backend.reset_peak_memory()
        host_sets = [(q, k)] + [(q.copy(), k.copy()) for _ in range(copies - 1)]
        fn, arg_sets, to_host = timed_call(backend, plan.phase, host_sets)
        timer = KernelTimer(fn, arg_sets, backend.sync, device_clock=device_clock,
                            flush_between_calls=flush,
                            graphs=plan.cuda_graphs and device_clock is not None)
        # Pristine bits of what the backend is given, before it has run once.
        guard = checks.InputGuard.take(backend, (inputs.cast(shape.q, plan.dtype),
                                                 inputs.cast(shape.k, plan.dtype)),
                                       host_sets, arg_sets if plan.phase == "kernel" else [])
        cell = self.cell = CellUnderTest(Path(shape_folder), plan, precision, shape.reference,
                                         to_host, guard, problem.s_shape(), timer)
        prepared = clock()
        result, first_call_s = timer.first_call()
        figures = CellFigures(first_call_s=first_call_s, precision=precision,
                              cache_copies=copies, setup_s=prepared - started,
                              cache_bytes=backend.cache_bytes() or plan.host_cache_bytes,
                              clock=getattr(device_clock, "name", "cuda-events")
                              if device_clock is not None else "host",
                              l2_flush=flush, info=safe_info(backend))
        checked = clock()
        host = cell.host_answer(result)
        check_agreement(host, shape.reference if first else some_rows(shape.reference),
                         problem.s_shape(), plan.dtype, precision, figures, "first_call")
        figures.agreement_s = clock() - checked
        del result
        warm_start = clock()
        cell.calls, cell.block_s = timer.calibrate(plan.min_sample_s,
                                                   plan.warmup_s if first else 0.0)
        cell.fastest_call_s = cell.block_s / cell.calls
        figures.calls_per_sample, figures.block_s = cell.calls, cell.block_s
        figures.warmup_s = clock() - warm_start
        # False when asked but the library could not capture: rows say so.
        figures.cuda_graph = timer.uses_graphs
        if device_clock is not None:
            figures.launch_overhead_s = timer.launch_overhead()
        # Read after warm-up, when the clocks have risen to what sampling will see.
        figures.add_telemetry(telemetry(backend, "start"))
        return figures

    def _check_device_memory(self, q: Any, k: Any, copies: int, plan: CellPlan) -> None:
        """Skip (not fail) a cell whose inputs and outputs cannot fit in device memory: the
        input copies (twice in end-to-end, where each call makes its own) and two outputs."""
        memory = self.backend.device_memory()
        if memory is None:
            return
        free, total = memory
        # One set more than the copies: the fresh set the checks after timing prepare.
        inputs_bytes = (copies + 1) * (q.nbytes + k.nbytes) * (2 if plan.phase == "end_to_end"
                                                               else 1)
        needed = inputs_bytes + 2 * math.prod(q.shape[:-1]) * k.shape[-2] * q.itemsize
        if needed > 0.9 * free:
            raise CellFailure("skipped", f"needs about {needed / 2**30:.1f} GiB of device "
                              f"memory, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")

    def sample(self, count: int, round_number: int,
               wall_limit_s: float | None = None) -> list[Any]:
        cell = self.cell
        assert cell is not None, "sample before setup"
        samples = cell.timer.samples(count, cell.calls, round_number,
                                     math.inf if wall_limit_s is None else wall_limit_s)
        cell.fastest_call_s = min([cell.fastest_call_s, *(s.seconds for s in samples)])
        return samples

    def check(self) -> bool:
        """The machine check, in this process: a worker's threads can lose their speed-up
        while the main process's keep theirs (see `qkbench.runner.machine_check`)."""
        from qkbench.machine.canary import ParallelCanary

        canary = self.canaries.get(self.cell_threads)
        if canary is None:
            # No pause after a reading: the main process's own check follows each round's
            # worker checks and pauses for every process's BLAS threads to settle.
            canary = self.canaries[self.cell_threads] = ParallelCanary(
                settle_s=0.0, min_margin=self.check_margin)
            canary.warm_up()
        return bool(canary.fit())

    def release(self) -> CellFigures:
        """End the cell: its closing telemetry and peak memory; undo per-cell settings."""
        figures = CellFigures()
        if self.cell is not None:
            figures.add_telemetry(telemetry(self.backend, "end"))
            peak = self.backend.peak_memory_bytes()
            if peak is not None:
                figures.peak_device_bytes = int(peak)
        self.cell = None
        if self.threads_set:  # nothing leaks into the next cell
            self.backend.set_threads(None)
            self.threads_set = False
        self.backend.cleanup()
        return figures


def quota_threads(backend: Any) -> int | None:
    """The threads a library-default cell runs on: None (the library's own default) unless
    the cgroup's CPU quota allows fewer cores than that default would use; then the usable
    cores (qkbench.machine.cpu_quota). Libraries size their pools from the affinity mask or
    the CPU count, which a container's quota does not change: two threads under a 1.5-core
    quota are throttled in every period, and the cell would time the quota."""
    if getattr(backend, "device", "cpu") != "cpu":
        return None
    limits = cpu_limits()
    if not limits.quota_binds:
        return None
    backend.set_threads(None)
    default = safe_info(backend).get("threads")
    if isinstance(default, int) and 0 < default <= limits.usable:
        return None
    return limits.usable
