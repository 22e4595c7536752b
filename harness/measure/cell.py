"""In a worker: what one cell is — its plan, how it fails, the state of the cell set up last
(`CellUnderTest`), and the pieces the worker's setup and the checks after timing share (the
timed call, the agreement check, the backend's facts). Used by `qkbench.measure.session` and
`qkbench.measure.verify`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from qkbench.backends.base import Problem
from qkbench.measure import agreement, checks, inputs
from qkbench.measure.kernel_timer import KernelTimer


@dataclass(frozen=True)
class CellPlan:
    """What a worker needs to know to set up one cell."""

    dtype: str
    min_sample_s: float
    warmup_s: float
    phase: str = "kernel"
    cache: str = "warm"
    threads: int | None = None
    host_cache_bytes: int = 32 << 20  # the host CPU's last-level cache
    check_margin: float = 0.0  # the machine check's least margin (see machine.canary.fence)
    cuda_graphs: bool = False  # capture each block as a CUDA graph (backends with a clock)


# A cold-cache cell rotates through copies of its inputs that together exceed twice the cache;
# tiny inputs would need absurdly many copies, so this caps it (and the row says how many).
MAX_COLD_COPIES = 1 << 14


def cold_copies(set_bytes: int, cache_bytes: int) -> int:
    """How many input copies make a rotation that no cache level can hold."""
    return int(min(MAX_COLD_COPIES, max(2, -(-2 * cache_bytes // max(set_bytes, 1)))))


@dataclass
class CellFigures:
    """What a cell's workers and the main process learn of it besides its samples: every name
    declared here, with its type. Most are summary columns of the same name (the row takes
    them as they are); `WORKING` are the runner's own (time accounting, the sampler, the speed
    check) and have no column; a backend's telemetry under a name no column has, and its
    `info()`, go to the row's `info` mapping. A name not declared is refused (`merge`)."""

    precision: str | None = None
    first_call_s: float | None = None
    cache_copies: int | None = None
    clock: str | None = None
    l2_flush: bool | None = None
    calls_per_sample: int | None = None
    cuda_graph: bool | None = None
    launch_overhead_s: float | None = None
    # the agreement check's figures (of the check that failed, when one did)
    max_err: float | None = None
    mean_err: float | None = None
    err_bound: float | None = None
    checked_rows: int | None = None
    outside_share: float | None = None
    worst_i: int | None = None
    worst_j: int | None = None
    failed_check: str | None = None
    cpu_after_sync_s: float | None = None
    device_after_sync_s: float | None = None
    # device telemetry, after warm-up (start) and after sampling (end)
    peak_device_bytes: int | None = None
    sm_clock_start_mhz: float | None = None
    sm_clock_end_mhz: float | None = None
    temperature_start_c: float | None = None
    temperature_end_c: float | None = None
    power_start_w: float | None = None
    power_end_w: float | None = None
    throttled: bool | None = None
    # the machine while the group sampled, and the runner's verdicts on the cell
    processes: int | None = None  # worker processes the cell was set up in
    foreign_load: float | None = None
    set_aside_causes: str | None = None
    cpu_mhz: float | None = None
    machine_check: str | None = None
    speed_limit_s: float | None = None
    quota_measured: bool | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # WORKING: no column
    setup_s: float = 0.0
    agreement_s: float = 0.0
    warmup_s: float = 0.0
    verify_s: float = 0.0
    block_s: float | None = None
    cache_bytes: int | None = None
    new_inputs_ratio: float | None = None

    WORKING: ClassVar[tuple[str, ...]] = ("setup_s", "agreement_s", "warmup_s", "verify_s",
                                          "block_s", "cache_bytes", "new_inputs_ratio")

    def merge(self, other: CellFigures | Mapping[str, Any] | None) -> CellFigures:
        """These figures with `other`'s set over them (None leaves a figure as it was;
        `info` mappings merge). Raises ValueError on a name this type does not declare."""
        if other is None:
            return self
        values = other.set_values() if isinstance(other, CellFigures) else dict(other)
        declared = {spec.name for spec in fields(self)}
        unknown = sorted(set(values) - declared)
        if unknown:
            raise ValueError(f"undeclared cell figures: {', '.join(unknown)}")
        for name, value in values.items():
            if name == "info":
                self.info = {**self.info, **dict(value or {})}
            elif value is not None:
                setattr(self, name, value)
        return self

    def set_values(self) -> dict[str, Any]:
        """The figures that hold a value (a default working figure counts as unset)."""
        out = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            default = spec.default if spec.default is not MISSING else None
            if spec.name == "info" and value:
                out["info"] = dict(value)
            elif spec.name != "info" and value is not None and value != default:
                out[spec.name] = value
        return out

    def columns(self) -> dict[str, Any]:
        """The figures that are summary columns, as the row takes them."""
        return {name: value for name, value in self.set_values().items()
                if name not in self.WORKING}

    def add_telemetry(self, readings: Mapping[str, float]) -> None:
        """A backend's telemetry named by moment: a declared figure where one fits, else kept
        in `info` (a plugin may report anything)."""
        declared = {spec.name for spec in fields(self)}
        for name, value in readings.items():
            if name in declared:
                setattr(self, name, value)
            else:
                self.info[name] = value


class CellFailure(Exception):
    """A cell ended without timings: `status` is error, crashed, timeout, oom or mismatch."""

    def __init__(self, status: str, reason: str,
                 details: CellFigures | Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.details = details if isinstance(details, CellFigures) else \
            CellFigures().merge(details)


def problem_of(shape: inputs.ShapeInputs) -> Problem:
    """What the cell computes: the saved attention problem, or the plain product of Q and K."""
    if shape.reference.problem is not None:
        return shape.reference.problem
    return Problem(shape.q.shape[0], shape.k.shape[0], shape.q.shape[1])


def timed_call(backend: Any, phase: str, host_sets: list[tuple[Any, Any]]
                ) -> tuple[Any, list[tuple[Any, Any]], Any]:
    """(the function to time, its argument sets, how to bring its result to the host)."""
    if phase == "kernel":
        # Inputs already where the backend wants them; the result stays there.
        return backend.scores, [backend.prepare(a, b) for a, b in host_sets], backend.to_numpy

    def end_to_end(a: Any, b: Any) -> Any:
        # Host arrays in, host array out: prepare (copies, casts, transfers) and to_numpy are
        # inside the time.
        return backend.to_numpy(backend.scores(*backend.prepare(a, b)))

    return end_to_end, host_sets, lambda s: s


@dataclass
class CellUnderTest:
    """The cell a worker set up last: what sampling and the checks after timing read and
    update."""

    folder: Path  # the shape's inputs (and the fresh set the checks use)
    plan: CellPlan
    precision: str
    reference: inputs.Reference
    to_host: Any  # brings a timed call's result to the host
    guard: checks.InputGuard  # pristine bits of what the backend was given
    s_shape: tuple[int, ...]  # of S: (n, m), or (B, H, n, m)
    timer: KernelTimer
    calls: int = 1  # calls per timed block
    block_s: float = 0.0  # the calibrated block's length
    # The fastest per-call time of the cell's blocks: what the checks after timing compare
    # with (the fastest, since a preempted block on a busy machine says nothing of it).
    fastest_call_s: float = math.inf
    to_host_s: list[float] = field(default_factory=list)  # to_numpy times (first, timed, fresh)

    def host_answer(self, result: Any, to_host: Any = None) -> Any:
        """A result on the host, timing the conversion (`verify` compares those times with a
        call's: work hidden in to_numpy shows there)."""
        start = time.perf_counter()
        host = (to_host or self.to_host)(result)
        self.to_host_s.append(time.perf_counter() - start)
        return host


# Rows of S the other workers of a cell check in a timed call's answer (all when fewer).
SOME_ROWS = 256


def some_rows(reference: inputs.Reference) -> inputs.Reference:
    """A random share of a reference's rows, drawn from OS entropy."""
    if len(reference.rows) <= SOME_ROWS:
        return reference
    picked = np.sort(np.random.default_rng().choice(len(reference.rows), SOME_ROWS,
                                                    replace=False))
    return reference.subset(picked)


def failed(check: str, detail: str, figures: CellFigures | None = None) -> CellFailure:
    """The failure of one check: its status, a reason that opens with the check's name, and
    the check in `failed_check`."""
    details = CellFigures().merge(figures).merge({"failed_check": check})
    return CellFailure(checks.status(check), checks.reason(check, detail), details)


def check_agreement(host: Any, reference: inputs.Reference, shape: tuple[int, ...], dtype: str,
                     precision: str, figures: CellFigures, check: str) -> None:
    """Add the error figures to `figures`; raise the `check`'s failure when S is wrong."""
    bad_output = agreement.check_output(host, shape, dtype)
    if bad_output:
        raise failed(check, bad_output, figures)
    verdict = agreement.compare(host, reference, precision)
    errors = {"max_err": verdict.max_err, "mean_err": verdict.mean_err,
              "err_bound": verdict.bound, "checked_rows": verdict.checked_rows,
              "outside_share": verdict.outside_share,
              "worst_i": verdict.worst[0] if verdict.worst else None,
              "worst_j": verdict.worst[1] if verdict.worst else None}
    if not verdict.passed:
        # The failing answer's figures replace the first call's: the row shows what gave it away.
        raise failed(check, verdict.reason or "", CellFigures().merge(figures).merge(errors))
    figures.merge(errors)


def device_clock_of(backend: Any) -> Any:
    """The backend's device clock, or None (also for plugins written before the hook)."""
    hook = getattr(backend, "device_clock", None)
    return hook() if callable(hook) else None


def precision_of(backend: Any, dtype: str) -> str:
    """The precision the backend computes a dtype in (TF32 for float32, say); the agreement
    bound uses it, so a backend that declares less precision is held to a looser bound."""
    precision = getattr(backend, "precision", None)
    return str(precision(dtype)) if callable(precision) else dtype


def telemetry(backend: Any, when: str) -> dict[str, float]:
    """sm_clock_start_mhz, temperature_end_c, ...: a backend's readings, named by moment."""
    try:
        readings = backend.telemetry() or {}
    except Exception:  # telemetry is extra information; it never fails a cell
        return {}
    out = {}
    for key, value in readings.items():
        stem, _, unit = key.rpartition("_")
        if stem and isinstance(value, (int, float)):
            out[f"{stem}_{when}_{unit}"] = float(value)
    return out


def safe_info(backend: Any) -> dict[str, Any]:
    """A backend's info() must never fail a cell: it is only facts about the row (a fact with
    a column of its own fills it, the rest is kept in the row's `info` mapping)."""
    try:
        info = backend.info()
        return {k: v for k, v in dict(info).items() if isinstance(v, (str, int, float, bool))}
    except Exception:
        return {}

