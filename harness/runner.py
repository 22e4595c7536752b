"""Run the cells of a sweep — the loop that ties inputs, agreement and timing together.

For each shape the main process builds the inputs and the float64 reference once (saved to a
scratch folder that workers map). For each variant of that shape (dtype, phase, cache, threads)
every backend's worker sets up its cell (prepare, first call, agreement check); the backends
that agree are then sampled in interleaved rounds, and afterwards checked again (inputs
untouched, a timed call's answer, idle after sync(), a fresh input set, a possible speed: see
docs/correctness.md). Every finished cell is handed to the `RunWriter` at once, and no failure
of one backend or cell stops the others.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qkbench.backends.registry import BackendSpec
from qkbench.machine import cpu_peak
from qkbench.machine.canary import ParallelCanary
from qkbench.machine.contention import LoadMeter
from qkbench.machine.cpu_quota import cpu_limits
from qkbench.machine.os_causes import RoundCauses
from qkbench.measure import checks, inputs, plausible
from qkbench.measure.cell import CellFailure, CellFigures, CellPlan
from qkbench.measure.environments import Environment
from qkbench.measure.handles import (  # noqa: F401  (throttled, machine_check: re-exported)
    BackendWorkers,
    CellTimeout,
    PreparedCell,
    backend_workers,
    machine_check,
    os_figures,
    release,
    round_order,
    start_workers,
    stop_workers,
    threads_in_force,
    throttled,
)
from qkbench.measure.resources import (available_bytes, cell_bytes, input_copies, shape_bytes,
                                       too_big)
from qkbench.measure.timing import UNFIT_BUDGET_FACTOR, SamplingResult, StopRule, interleave
from qkbench.measure.worker import WorkerHandle
from qkbench.plan.config import Config
from qkbench.plan.sweep import Cell, Shape, Shard, above_size_limit, expand, groups, size_limits
from qkbench.cell_key import CellKey, member_name
from qkbench.records.results import (
    RunWriter,
    min_bytes,
    sample_rows,
    summary_row,
)

# How long asking a worker whether its backend is available may take (it imports the library).
OPEN_TIMEOUT_S = 120.0

CellDone = Callable[[dict[str, Any]], None]
# (device, precision) → the machine's measured peak GFLOP/s, for percent-of-peak.
Peaks = dict[tuple[str, str], float]
# device → {precision: GFLOP/s, "bandwidth_gbs": GB/s}: the ceilings no real median passes
# (see qkbench.measure.plausible.ceilings).
Ceilings = dict[str, dict[str, float]]

# Where a run keeps the inputs its workers map, inside the run directory (removed at the end).
SCRATCH_DIR = ".inputs"


@dataclass
class RunCounts:
    """How the cells ended, and where the wall time went (the CLI reports the time split;
    the exit code comes from the final table, which also holds cells of a resumed run)."""

    by_status: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def spend(self, activity: str, seconds: float) -> None:
        self.seconds[activity] = self.seconds.get(activity, 0.0) + seconds


WHOLE_SWEEP = Shard(1, 1)


class Runner:
    def __init__(self, config: Config, specs: list[BackendSpec], writer: RunWriter,
                 on_cell_done: CellDone = lambda row: None, peaks: Peaks | None = None,
                 host_cache_bytes: int = 32 << 20, shard: Shard = WHOLE_SWEEP,
                 done: set[CellKey] | None = None,
                 ceilings: Ceilings | None = None,
                 environments: Mapping[str, Environment] | None = None) -> None:
        """`shard` picks the part of the sweep to run; cells whose keys are in `done` (from an
        interrupted run being resumed) are neither run nor recorded again. `environments`
        (probed, qkbench.measure.environments) are those of `config.environments`: every
        backend then has workers in each of them."""
        self.config, self.writer, self.on_cell_done = config, writer, on_cell_done
        self.peaks, self.host_cache_bytes = peaks or {}, host_cache_bytes
        self.ceilings = ceilings or {}
        self.shard, self.done = shard, done or set()
        self.max_gflop = size_limits(config, specs)
        self.labels = [spec.label for spec in specs]
        self.environments = dict(environments or {})
        # Keyed by member (`Cell.member`): a backend, in one environment.
        self.backends: dict[str, BackendWorkers] = {}
        for spec in specs:
            for environment in list(self.environments.values()) or [None]:
                self.backends[member_name(spec.label, environment and environment.name)] = \
                    backend_workers(spec, environment, config.timing.processes)
        timing = config.timing
        self.rule = StopRule(target_rel_ci=timing.target_rel_ci, min_samples=timing.min_samples,
                             max_samples=timing.max_samples, budget_s=timing.budget_s)
        self.counts = RunCounts()
        self.canary: ParallelCanary | None = None  # started with the first group sampled
        # The cores qkbench may use (affinity mask and cgroup CPU quota): what a CPU cell's
        # percent-of-peak is against, and whether its threads measured the quota.
        self.cpu_limits = cpu_limits()

    def cells(self) -> list[Cell]:
        """The cells this run will record: its shard of the sweep, less those already done."""
        return [cell for cell in expand(self.config, self.labels, self.shard)
                if cell.key not in self.done]

    def run(self) -> RunCounts:
        # The shared inputs live inside the run directory, not in the temp directory: a run
        # killed with SIGKILL (no finally runs) then leaves them where its owner looks, and
        # resuming it or deleting the run removes them; nothing accumulates in /tmp for good.
        scratch = self.writer.folder / SCRATCH_DIR
        shutil.rmtree(scratch, ignore_errors=True)  # a killed run's, when it is resumed
        scratch.mkdir(parents=True)
        max_ref = self.config.agreement.max_reference_elements
        started_s = start_workers(self.backends, [cell.member for cell in self.cells()],
                                  self._open)
        try:
            for shape, shape_groups in groups(self.config, self.labels, self.shard):
                folder = scratch / shape.folder_name()
                shape_too_big = too_big(shape_bytes(shape, max_ref), available_bytes())
                for group in shape_groups:
                    runnable = []
                    for cell in group:
                        if cell.key in self.done:
                            continue
                        reason = (self._skip_reason(cell) or shape_too_big
                                  or self._memory_reason(cell))
                        if reason is None:
                            runnable.append(cell)
                        else:
                            self._record(cell, "skipped", reason)
                    if runnable and not folder.exists():
                        self._prepare_inputs(shape, folder)
                    self._run_group(runnable, folder)
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            stop_workers([w for backend in self.backends.values() for w in backend.workers])
            restarts = sum(w.startup_s for b in self.backends.values() for w in b.workers)
            self.counts.spend("worker start-up", started_s + restarts)
        return self.counts

    def _prepare_inputs(self, shape: Shape, folder: Path) -> None:
        started = time.monotonic()
        for which, where in ((inputs.TIMED, folder), (inputs.FRESH, inputs.fresh_folder(folder))):
            built = inputs.build(shape.n, shape.m, shape.d_k, self.config.seed,
                                 self.config.agreement.max_reference_elements, shape.problem(),
                                 which)
            inputs.save(built, where)
            if which == inputs.TIMED:
                self.counts.spend("inputs and reference", time.monotonic() - started)
                started = time.monotonic()
        # Its own entry, so the cost of the fresh-inputs check shows in the time split.
        self.counts.spend("correctness checks", time.monotonic() - started)

    def _skip_reason(self, cell: Cell) -> str | None:
        too_large = above_size_limit(self.max_gflop, cell.backend, cell.shape.flops)
        if too_large:
            return too_large
        backend = self._open(cell.member)
        if backend.open_failure is not None:
            return None  # reported as that failure, per cell, by _run_group
        if backend.unavailable:
            return backend.unavailable
        if cell.dtype not in backend.dtypes:
            return f"{cell.backend} does not support {cell.dtype}"
        if cell.variant.threads_requested is not None and backend.device != "cpu":
            return "the threads axis applies to CPU backends only"
        missing = cell.shape.problem().needs() - backend.attention
        if missing:
            takes = ", ".join(sorted(backend.attention)) or "the 2-D product only"
            return (f"{cell.backend} does not take {', '.join(sorted(missing))} inputs "
                    f"(it takes: {takes})")
        return None

    def _open(self, label: str) -> BackendWorkers:
        """Ask the backend's worker, once, whether the backend can run on this machine."""
        backend = self.backends[label]
        if not backend.opened:
            backend.opened = True
            try:
                reply = backend.worker.request(("open",), OPEN_TIMEOUT_S)
                reason = reply.get("unavailable")
                backend.unavailable = str(reason) if reason else None
            except CellFailure as failure:
                # unavailable() itself raised, hung or crashed: every cell of it gets that status.
                backend.open_failure = CellFailure(
                    failure.status, f"checking availability failed: {failure.reason}")
        return backend

    def _plan(self, cell: Cell) -> CellPlan:
        timing, variant = self.config.timing, cell.variant
        return CellPlan(dtype=variant.dtype, min_sample_s=timing.min_sample_s,
                        warmup_s=timing.warmup_s, phase=variant.phase, cache=variant.cache,
                        threads=variant.threads_requested, host_cache_bytes=self.host_cache_bytes,
                        check_margin=timing.target_rel_ci,
                        cuda_graphs=timing.cuda_graphs)

    def _run_group(self, cells: list[Cell], folder: Path) -> None:
        """Set up each cell of one group; sample the ones that agree, interleaved."""
        ready: dict[str, PreparedCell] = {}
        for cell in cells:
            backend = self.backends[cell.member]
            if backend.open_failure is not None:
                failure = backend.open_failure
                self._record(cell, failure.status, failure.reason)
                continue
            prepared = self._set_up(cell, backend, folder)
            if prepared is not None:
                ready[cell.member] = prepared
        if not ready:
            return

        block_s = {label: p.figures.block_s for label, p in ready.items()}
        load = LoadMeter(self._own_pids)
        load.start()
        checked = self._multi_threaded_cpu(ready)
        watch = self._round_watch(ready)
        results = interleave({label: p.sampler() for label, p in ready.items()}, block_s,
                             self.rule, min_rounds=max(len(p.workers) for p in ready.values()),
                             machine_fit=self._machine_fit(checked) if checked else None,
                             unfit_budget_factor=self._unfit_budget_factor(),
                             round_watch=watch, cost_clock=time.monotonic,
                             order=round_order(self.config.seed, cells)
                             if self.environments else None)
        foreign_load = load.stop()
        guarded = {id(p) for p in checked}
        for label, result in results.items():
            prepared = ready[label]
            cell, figures = prepared.cell, prepared.figures
            figures.foreign_load = foreign_load
            figures.merge(os_figures(result, watch))
            figures.machine_check = (result.check_gave_up or "on") if id(prepared) in guarded \
                else "off"
            self.counts.spend("timed work", sum(s.seconds * s.calls for s in result.samples))
            failure = self._verify(prepared, result) if result.failure is None else None
            figures.merge(release(prepared.workers))
            if result.failure is not None:
                self._record(cell, result.failure.status, result.failure.reason, figures)
            elif failure is not None:
                # Sampled, but not the work it claims: no time is shown as a result.
                self._record(cell, failure.status, failure.reason,
                             figures.merge(failure.details))
            else:
                figures.throttled = throttled(figures)
                self._record(cell, "ok", "", figures, result)

    def _verify(self, prepared: PreparedCell, result: SamplingResult) -> CellFailure | None:
        """The checks after timing (see qkbench.measure.checks): in every worker that sampled
        the cell, its inputs and a timed call's answer; in the first, idle after sync() and the
        fresh input set; then whether the median is physically possible. The failure of the
        first check that fails, or None.

        The checks have a time limit of their own (the cell's `timeout_s` again): a cell whose
        setup and sampling used up most of its limit on a busy machine is still checked rather
        than recorded as a timeout, and a backend that hangs in a check still ends as one."""
        started = time.monotonic()
        limit = CellTimeout(self.config.timing.timeout_s)
        try:
            for index, worker in enumerate(prepared.workers):
                prepared.figures.merge(limit.request(worker, ("verify", index == 0)))
        except CellFailure as failure:
            return failure
        finally:
            self.counts.spend("correctness checks", time.monotonic() - started)
        return self._implausible(prepared, result)

    def _implausible(self, prepared: PreparedCell, result: SamplingResult) -> CellFailure | None:
        cell, figures = prepared.cell, prepared.figures
        device = self.backends[cell.member].device
        precision = figures.precision or cell.dtype
        memory = plausible.memory_bytes(min_bytes(cell),
                                        figures.cache_bytes or self.host_cache_bytes)
        ceiling = self.ceilings.get(device, {})
        limit = plausible.speed_limit(cell.shape.flops, memory, ceiling.get(precision),
                                      ceiling.get("bandwidth_gbs"))
        figures.speed_limit_s = limit.fastest_s
        median = result.median()
        why = None if median is None else plausible.implausible(
            median, cell.shape.flops, memory, limit, device, precision)
        if why is None:
            return None
        return CellFailure(checks.status("speed"), checks.reason("speed", why),
                           CellFigures(failed_check="speed"))

    def _multi_threaded_cpu(self, ready: dict[str, PreparedCell]) -> list[PreparedCell]:
        """The cells of a group the machine check guards: only multi-threaded CPU work lost
        speed when the machine lost parallel capacity (measured: the one-threaded numba-loops
        not at all), and a GPU backend's host side runs on one thread. A library-default cell
        that reports no thread count runs on the usable cores: one, under a CPU quota of
        less than two, which leaves no parallel capacity to lose."""
        if not self.config.timing.machine_check:
            return []
        return [prepared for label, prepared in ready.items()
                if self.backends[label].device == "cpu"
                and (threads_in_force(prepared.cell, prepared.figures)
                     or self.cpu_limits.usable) > 1]

    def _round_watch(self, ready: dict[str, PreparedCell]) -> RoundCauses:
        """The OS's readings around each round of one group. Half the run's target interval:
        a loss below that cannot move a median by the interval the run aims for. Other
        processes' CPU counts only beyond the cores the group's threads leave idle (a GPU
        backend's host side and a one-threaded CPU cell use one)."""
        threads = max((threads_in_force(p.cell, p.figures) or self.cpu_limits.usable
                       if self.backends[label].device == "cpu" else 1)
                      for label, p in ready.items())
        return RoundCauses(share=0.5 * self.config.timing.target_rel_ci, own_pids=self._own_pids,
                           threads=threads)

    def _machine_fit(self, checked: list[PreparedCell]) -> Callable[[int | None], bool]:
        return machine_check(self._canary(), checked,
                             lambda seconds: self.counts.spend("machine check", seconds))

    def _canary(self) -> ParallelCanary:
        if self.canary is None:
            # A slowdown smaller than the precision the run aims for cannot spoil a round.
            self.canary = ParallelCanary(min_margin=self.config.timing.target_rel_ci)
            self.canary.warm_up()
        return self.canary

    def _unfit_budget_factor(self) -> float:
        """How long rounds may be set aside (see `interleave`), kept well inside the cell's
        timeout: a cell that waits out an unfit machine must not end as a timeout."""
        timing = self.config.timing
        return max(1.0, min(UNFIT_BUDGET_FACTOR, 0.5 * timing.timeout_s / timing.budget_s))

    def _set_up(self, cell: Cell, backend: BackendWorkers, folder: Path) -> PreparedCell | None:
        """Set the cell up in each of the backend's workers; None (and the cell recorded as
        failed) when any of them fails. Each worker is a process of its own, so its buffers
        land at addresses of their own: see `Timing.processes`."""
        limit, plan = CellTimeout(self.config.timing.timeout_s), self._plan(cell)
        first: CellFigures | None = None
        workers: list[WorkerHandle] = []
        for worker in backend.workers:
            try:
                figures = limit.request(worker, ("setup", str(folder), plan, first is None))
            except CellFailure as failure:
                if first is not None and failure.status in ("skipped", "oom"):
                    # No room beside the copies the earlier workers hold (a GPU's memory):
                    # sample in the workers that have the cell rather than not at all.
                    break
                release(workers)
                self._record(cell, failure.status, failure.reason, failure.details)
                return None
            self._account_setup(figures)
            workers.append(worker)
            first = first or figures
        assert first is not None
        first.processes = len(workers)
        return PreparedCell(cell, first, limit, workers)

    def _own_pids(self) -> list[int]:
        """This process and every backend's worker: the CPU time that is not foreign load."""
        pids = [worker.pid for backend in self.backends.values() for worker in backend.workers]
        return [os.getpid()] + [pid for pid in pids if pid is not None]

    def _memory_reason(self, cell: Cell) -> str | None:
        """Why the cell would not fit in host memory now, or None."""
        copies = input_copies(cell, self.host_cache_bytes)
        needed = self.config.timing.processes * max(1, len(self.environments)) * cell_bytes(
            cell.shape, cell.dtype, copies, self.config.agreement.max_reference_elements)
        return too_big(needed, available_bytes())

    def _account_setup(self, figures: CellFigures) -> None:
        self.counts.spend("warm-up and compilation",
                          figures.setup_s + (figures.first_call_s or 0.0) + figures.warmup_s)
        self.counts.spend("agreement check", figures.agreement_s)

    def _record(self, cell: Cell, status: str, reason: str,
                figures: CellFigures | None = None,
                sampling: SamplingResult | None = None) -> None:
        started = time.monotonic()
        device = self.backends[cell.member].device
        figures = CellFigures().merge(figures)
        precision = figures.precision or cell.dtype
        peak = self.peaks.get((device, precision))
        if device == "cpu":
            threads = threads_in_force(cell, figures)
            peak = cpu_peak.for_threads(peak, threads, self.cpu_limits.usable)
            figures.quota_measured = self.cpu_limits.quota_measured(threads)
        row = summary_row(cell, device, status, reason, figures, sampling, peak_gflops=peak)
        self.writer.append(row, sample_rows(cell, device, precision, sampling)
                           if sampling else [])
        self.counts.add(status)
        self.counts.spend("writing", time.monotonic() - started)
        self.on_cell_done(row)

