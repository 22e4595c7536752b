"""In the main process: a backend's workers and a cell set up in them.

What the runner holds per backend (`BackendWorkers`: its worker processes and what it takes)
and per prepared cell (`PreparedCell`: the cell's figures, its own time limit, the sampler that
spreads rounds over the workers), starting and stopping the workers, the machine check across a
group's workers, and the row's figures that come from the machine (GPU throttling, the OS's
causes). The runner
(`qkbench.runner`) drives these; the workers themselves are `qkbench.measure.worker`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qkbench.backends.registry import BackendSpec, load_class
from qkbench.machine.canary import ParallelCanary
from qkbench.machine.os_causes import RoundCauses, describe
from qkbench.measure.cell import CellFailure, CellFigures
from qkbench.measure.environments import Environment
from qkbench.measure.timing import Sample, SamplerFailed, SamplingOver, SamplingResult
from qkbench.measure.worker import WorkerHandle
from qkbench.plan.sweep import Cell

# How long a worker may take to drop a cell, or to answer a machine check (a quiet machine
# answers in milliseconds: this only bounds a worker that is stuck).
RELEASE_TIMEOUT_S = 30.0


@dataclass
class BackendWorkers:
    """What the runner knows about one backend of the sweep."""

    spec: BackendSpec
    device: str
    dtypes: tuple[str, ...]
    attention: frozenset[str]  # the attention features it takes (backends.base)
    workers: list[WorkerHandle]  # timing.processes of them; rounds take turns among them
    unavailable: str | None = None  # why it cannot run here (set once, on first use)
    opened: bool = False
    open_failure: CellFailure | None = None

    @property
    def worker(self) -> WorkerHandle:
        """The first worker: the one asked whether the backend is available here."""
        return self.workers[0]


def backend_workers(spec: BackendSpec, environment: Environment | None,
                     processes: int) -> BackendWorkers:
    """A backend's workers in one environment (None: this process's interpreter). Its class
    is read where its workers will run: another environment may have another version of it,
    or none (then its cells there are skipped, with the reason)."""
    workers = [WorkerHandle(spec.path, dict(spec.options), environment)
               for _ in range(processes)]
    if environment is None:
        cls = load_class(spec.path)
        return BackendWorkers(spec, cls.device, tuple(cls.dtypes),
                              frozenset(getattr(cls, "attention", ())), workers)
    facts = environment.backend(spec.path)
    backend = BackendWorkers(spec, str(facts.get("device", "cpu")),
                             tuple(facts.get("dtypes", ())),
                             frozenset(facts.get("attention", ())), workers)
    if "missing" in facts:
        backend.opened = True  # no worker is asked: the class is not there
        backend.unavailable = (f"{spec.label} cannot be loaded in environment "
                               f"{environment.name}: {facts['missing']}")
    return backend


def round_order(seed: int, cells: list[Cell]) -> Callable[[list[str]], list[str]]:
    """The members' order within each round of a group that spans environments, shuffled by
    a generator seeded by the config's seed and the group: neither environment always runs
    first (right after the machine check's pause, or right after the other's turn)."""
    rng = random.Random(f"{seed}:{cells[0].key.as_dict() if cells else ''}")

    def order(members: list[str]) -> list[str]:
        rng.shuffle(members)
        return members
    return order


@dataclass
class PreparedCell:
    """A cell set up in one or more of its backend's workers, ready to be sampled."""

    cell: Cell
    figures: CellFigures  # from the first worker's setup (first call, agreement, ...), then more
    limit: CellTimeout
    workers: list[WorkerHandle]
    starts: list[int] = field(default_factory=list)  # each worker's start count at setup

    def __post_init__(self) -> None:
        self.starts = self.starts or [getattr(w, "starts", 0) for w in self.workers]

    def sampler(self) -> Callable[[int, int], list[Sample]]:
        """Round r is sampled in worker r mod len(workers): every process gets turns."""
        def take(count: int, round_number: int) -> list[Sample]:
            index = round_number % len(self.workers)
            worker = self.workers[index]
            if self.limit.nearly_out():
                raise SamplingOver("time_limit")
            if worker.starts != self.starts[index]:
                # Restarted since its setup (it died between requests): it no longer has the
                # cell, and a sample request would only say "sample before setup".
                raise SamplerFailed("crashed", "the worker process died between requests "
                                    "and lost its cell")
            try:
                return self.limit.request(worker, ("sample", count, round_number,
                                                    self.limit.sample_wall_s()))
            except CellFailure as failure:
                raise SamplerFailed(failure.status, failure.reason) from None
        return take


# A cell is flagged as throttled when the GPU's SM clock fell by more than this share between
# the end of warm-up and the end of sampling: the hardware bent that number.
THROTTLE_DROP = 0.05


def throttled(figures: CellFigures) -> bool | None:
    start, end = figures.sm_clock_start_mhz, figures.sm_clock_end_mhz
    if not start or end is None:
        return None
    return bool(end < (1.0 - THROTTLE_DROP) * start)


def os_figures(result: SamplingResult, watch: RoundCauses) -> dict[str, Any]:
    """The row's OS columns: the causes of its set-aside rounds, and the clock where known."""
    readable = watch.readable
    causes = describe(result.caused_rounds)
    unknown = [name for name in ("throttling", "steal") if not readable[name]]
    if unknown and not causes:
        causes = f"unknown ({', '.join(unknown)} not reported here)"
    mhz = sorted(watch.mhz_readings)
    return {"set_aside_causes": causes,
            "cpu_mhz": mhz[len(mhz) // 2] if mhz else None}


class CellTimeout:
    """A cell's hard time limit, counted only while its own workers work on it: with
    interleaving, a cell also waits while the other backends of its group take their turns."""

    def __init__(self, timeout_s: float) -> None:
        self.left_s = timeout_s
        self.longest_s = 0.0  # the longest request that answered

    def request(self, worker: WorkerHandle, message: tuple[Any, ...]) -> Any:
        # A process's start (spawn, imports: seconds on a loaded machine) is the harness's
        # cost, not the cell's: charged to it, a tight timeout_s ran out before any sample.
        worker.ensure_started()
        started = time.monotonic()
        try:
            answer = worker.request(message, self.left_s)
        finally:
            took = time.monotonic() - started
            self.left_s -= took
        if message[0] != "setup":
            self.longest_s = max(self.longest_s, took)
        return answer

    def sample_wall_s(self) -> float:
        """The wall time one sample request may take before the worker answers with the blocks
        it has: a quarter of what is left. A request's block count is planned from the usual
        block length, and a machine that turns busy mid-request can stretch it many times;
        capped, a healthy cell's request leaves it three quarters of its time, so
        `nearly_out` ends its sampling instead of the hard limit recording a timeout."""
        return max(self.left_s, 0.0) / 4.0

    def nearly_out(self) -> bool:
        """True when the next sample or check could run into the hard limit: less is left
        than twice the longest request so far. Measured on the machine it runs on (a loaded
        machine stretches every request), so a backend that works ends its sampling before
        its timeout instead of being recorded as one; a backend that hangs still reaches it
        within one request."""
        return self.longest_s > 0 and self.left_s < 2.0 * self.longest_s


def machine_check(canary: ParallelCanary, checked: list[PreparedCell],
                  spend: Callable[[float], None]) -> Callable[[int | None], bool]:
    """The machine check `interleave` asks around each round: the main process's canary, and
    after a round, the same check in each process that sampled it (`spend` gets the time).

    Why both: measured on the 2-vCPU VM, there were whole runs in which every worker's
    two-threaded NumPy ran 2x slower (numba 1.35x, torch-cpu 1.27x) while the main process's
    canary kept its speed-up; and a fresh process whose own canary lost it (threaded / one
    thread 1.04) lost it for its sgemm too (1.32).

    `interleave` sets a round aside, for each backend it slowed beyond that backend's own
    noise, when the readings on both of its sides are unfit. A process's own check is taken
    only after its rounds, so the reading between rounds r and r + 1 also carries the last
    answer of the processes that sample round r + 1: a process that stays unfit then has both
    sides of each of its rounds unfit, and a one-off unfit answer in a process sets nothing
    aside."""
    last: dict[tuple[int, int], bool] = {}  # (cell, slot) → that process's latest answer

    def fit(round_number: int | None) -> bool:
        started = time.monotonic()
        verdicts = []
        if round_number is not None:
            for index, prepared in enumerate(checked):
                slots = len(prepared.workers)
                slot = round_number % slots
                worker = prepared.workers[slot]
                if worker.alive and prepared.limit.left_s > 0:  # a failed cell's: not restarted
                    try:
                        # Not charged to the cell: the check is the harness's own work (its
                        # first reading in a process also calibrates), and a loaded machine
                        # stretching it must not turn a cell into a timeout, nor a tight limit
                        # kill a worker that holds the cell.
                        last[index, slot] = bool(worker.request(("check",), max(
                            prepared.limit.left_s, RELEASE_TIMEOUT_S)))
                        verdicts.append(last[index, slot])
                    except CellFailure:
                        pass  # the worker's next sample request meets the failure, records it
                # The side before the next round: its process's latest answer.
                verdicts.append(last.get((index, (round_number + 1) % slots), True))
        # The main process's reading comes last: its pause lets every process's BLAS threads
        # go to sleep before the next round's first turn.
        verdicts.append(canary.fit())
        spend(time.monotonic() - started)
        return all(verdicts)
    return fit


def start_workers(backends: dict[str, BackendWorkers], labels: list[str],
                  open_backend: Callable[[str], BackendWorkers]) -> float:
    """Start the workers of the backends named in `labels` (the run's cells) all at once,
    each loading its backend's library (`Backend.load`), so their start-ups overlap instead of
    queueing: first one per backend, which `open_backend`
    asks whether the backend is available here, then the others of the available ones.
    Returns the wall time it took; each worker's `startup_s` then counts only restarts after a
    crash or a hang."""
    started = time.monotonic()
    used = list(dict.fromkeys(labels))
    for label in used:
        backends[label].worker.launch(load=True)
    later = []
    for label in used:
        backend = open_backend(label)
        if backend.open_failure is None and not backend.unavailable:
            later += backend.workers[1:]
    for worker in later:
        worker.launch(load=True)
    for worker in later:
        worker.ensure_started()
    for backend in backends.values():
        for worker in backend.workers:
            worker.startup_s = 0.0
    return time.monotonic() - started


def stop_workers(workers: list[WorkerHandle]) -> None:
    """End the run's workers: hang up on all of them first, so that they exit side by side,
    then wait for each (a worker that does not exit is killed)."""
    for worker in workers:
        worker.hang_up()
    for worker in workers:
        worker.stop()


def release(workers: list[WorkerHandle]) -> CellFigures:
    """Free the cell in its workers; their closing figures (telemetry, peak memory)."""
    closing = CellFigures()
    for worker in workers:
        if not worker.alive:  # a crashed or killed worker has nothing left to release
            continue
        try:
            figures = worker.request(("release",), RELEASE_TIMEOUT_S)
        except CellFailure:
            continue  # the next request restarts the worker if this one died
        peak = max(closing.peak_device_bytes or 0, figures.peak_device_bytes or 0)
        closing.merge(figures)
        if peak:
            closing.peak_device_bytes = peak
    return closing


def threads_in_force(cell: Cell, figures: CellFigures | None) -> int | None:
    """The threads the backend reported computing with, else those the cell asked for."""
    reported = (figures.info if figures is not None else {}).get("threads")
    if isinstance(reported, int) and not isinstance(reported, bool) and reported > 0:
        return reported
    return cell.variant.threads_requested
