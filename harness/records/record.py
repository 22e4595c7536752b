"""The one typed record: the summary row, each column declared once, and the tables' cell keys.

Everything that names a column reads it from here: the writer (`results.summary_row`), the
loader's types (`results.typed_summary`), the migrations of older run directories, compare,
history, plots, report and the column table in docs/run-directory.md (generated from
`columns_markdown()` and checked by tests/test_docs.py).

To add a summary column: add one field to `SummaryRecord` with its unit and meaning. A key
axis is added in qkbench.cell_key (its fields open `SummaryRecord`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from qkbench.cell_key import CELL_KEY, CellKey, axis_fields, plain_value
from qkbench.units import missing  # the one rule for an absent value (re-exported)

# tampered, unsynced and implausible: a check after timing found that the timed work was not
# real (docs/correctness.md); like mismatch, they are never confused with error or crashed.
STATUSES = ("ok", "mismatch", "tampered", "unsynced", "implausible", "skipped", "error",
            "crashed", "timeout", "oom")
FAILED_STATUSES = ("mismatch", "tampered", "unsynced", "implausible", "error", "crashed",
                   "timeout", "oom")


def _column(unit: str, meaning: str, default: Any = None) -> Any:
    return field(default=default, metadata={"unit": unit, "meaning": meaning})


# ---------------------------------------------------------------------------------------------
# The cell key (declared in qkbench.cell_key; its tables' helpers here)


def cell_keys(frame: Any, columns: Iterable[str] = CELL_KEY) -> list[CellKey]:
    """Every row's CellKey, computed once per distinct key (samples tables run to 10⁵ rows)."""
    import numpy as np

    columns = [c for c in columns if c in frame]
    if not len(frame):
        return []
    ids = frame.groupby(columns, dropna=False, sort=False).ngroup().to_numpy()
    firsts = np.unique(ids, return_index=True)[1]
    records = frame[columns].iloc[firsts].to_dict("records")
    keys = {ids[i]: CellKey.of(record) for i, record in zip(firsts, records)}
    return [keys[i] for i in ids]


def with_cell_keys(frame: Any) -> Any:
    """A copy of a summary or samples table with `_cell` (its CellKey), `_group` (the key of
    its interleaving group) and `threads_key` (threads_requested as text) added."""
    frame = frame.copy()
    keys = cell_keys(frame)
    frame["_cell"] = keys
    frame["_group"] = [key.group() for key in keys]
    frame["threads_key"] = [key.threads_text for key in keys]
    return frame


# ---------------------------------------------------------------------------------------------
# The summary row


@dataclass
@axis_fields(lambda axis: True, meaning_suffix=" (cell key)")
class SummaryRecord:
    """One row of summary.parquet: one cell, measured (or why not). Times are in seconds. Its
    first fields are the cell key's axes (qkbench.cell_key.AXES).

    A figure a status does not have stays empty (None / NaN), never zero."""

    device: str = _column("", "`cpu` or `gpu`", "")
    precision: str = _column("", "the precision actually computed in: the dtype, or e.g. `tf32`",
                             "")
    kv_materialised: bool | None = _column("", "the backend repeated K H/H_kv times to compute "
                                           "grouped heads; empty when heads are not grouped")
    status: str = _column("", "one of STATUSES: ok, mismatch, tampered, unsynced, "
                          "implausible, skipped, error, crashed, timeout, oom", "ok")
    reason: str = _column("", "why a cell is not ok (the exception, the signal, the bound it "
                          "missed, …)", "")
    median_s: float | None = _column("s", "median time of one call over the samples kept")
    ci_low_s: float | None = _column("s", "95% confidence interval of the median, low end "
                                     "(order statistics; empty with < 6 samples)")
    ci_high_s: float | None = _column("s", "95% confidence interval of the median, high end")
    rel_ci: float | None = _column("1", "(ci_high_s − ci_low_s) / (2 · median_s)")
    samples: int = _column("", "how many samples the figures come from", 0)
    calls_per_sample: int | None = _column("calls", "back-to-back calls each sample timed")
    converged: bool = _column("", "whether rel_ci reached timing.target_rel_ci", False)
    stopped_by: str | None = _column("", "what ended sampling: `precision`, `budget` or "
                                     "`max_samples`")
    first_call_s: float | None = _column("s", "the very first call, timed alone (JIT "
                                         "compilation and lazy initialisation land here)")
    cache_copies: int | None = _column("", "input copies a cold-cache cell rotates through "
                                       "(1 when warm)")
    flops: int | None = _column("flop", "2·B·H·d_k·(unmasked entries of S per head); "
                                "2·n·m·d_k for the 2-D product")
    bytes: int | None = _column("B", "fewest bytes the kernel must move: (B·H·n·d_k + "
                                "B·H_kv·m·d_k + B·H·n·m) · itemsize (K once per key head)")
    intensity: float | None = _column("flop/B", "flops / bytes")
    gflops: float | None = _column("GFLOP/s", "flops / median_s / 10⁹")
    gbps: float | None = _column("GB/s", "bytes / median_s / 10⁹")
    peak_gflops: float | None = _column("GFLOP/s", "the peak of what the cell could use: on "
                                        "a CPU, the per-core physical peak × the cores its "
                                        "threads in force could run on (threads, capped by "
                                        "the usable cores; all of them when the threads are "
                                        "unknown); a GPU's whole peak (`qkbench peaks`)")
    pct_peak: float | None = _column("%", "gflops as a percentage of peak_gflops (the peak "
                                     "of the cores the cell's threads could use)")
    max_err: float | None = _column("1", "largest scaled error |S − ref| / (‖q_i‖·‖k_j‖)")
    mean_err: float | None = _column("1", "mean scaled error")
    err_bound: float | None = _column("1", "the bound max_err was held to (d_k and precision)")
    checked_rows: int | None = _column("rows", "rows of S checked against the reference")
    threads: int | None = _column("threads", "threads the backend reported in force")
    quota_measured: bool | None = _column("", "the cell's threads needed more CPU than the "
                                          "cgroup's CPU quota gives (meta.json "
                                          "environment.cpu.quota_cores): its time measures the "
                                          "quota, not the hardware; empty when no quota below "
                                          "the affinity mask is set")
    library_version: str | None = _column("", "the backend library's version")
    device_name: str | None = _column("", "the GPU's model, for gpu backends")
    peak_device_bytes: int | None = _column("B", "peak device memory during the cell")
    sm_clock_start_mhz: float | None = _column("MHz", "GPU SM clock after warm-up")
    sm_clock_end_mhz: float | None = _column("MHz", "GPU SM clock after sampling")
    temperature_start_c: float | None = _column("°C", "GPU temperature after warm-up")
    temperature_end_c: float | None = _column("°C", "GPU temperature after sampling")
    power_start_w: float | None = _column("W", "GPU power draw after warm-up")
    power_end_w: float | None = _column("W", "GPU power draw after sampling")
    throttled: bool | None = _column("", "the SM clock fell while sampling; empty when no clock "
                                     "was read")
    processes: int | None = _column("", "worker processes the samples were spread over")
    foreign_load: float | None = _column("cores", "CPU used by anything but qkbench while the "
                                         "group sampled (hypervisor steal included)")
    unfit_share: float | None = _column("1", "share of samples taken in rounds the machine "
                                        "check set aside (kept in samples.parquet, left out "
                                        "of the figures)")
    failed_check: str | None = _column("", "which correctness check failed (first_call, "
                                       "fresh_inputs, untouched_inputs, timed_call, nan_inf, "
                                       "shape, dtype, after_sync, speed, …); empty when none")
    outside_share: float | None = _column("1", "share of checked entries whose error exceeds "
                                          "err_bound")
    worst_i: int | None = _column("row", "row i of S of the worst entry")
    worst_j: int | None = _column("column", "column j of S of the worst entry")
    speed_limit_s: float | None = _column("s", "the fastest median physically possible here "
                                          "(peak FLOP/s and memory bandwidth); faster is "
                                          "`implausible`")
    cpu_after_sync_s: float | None = _column("s", "CPU time the worker used in the idle window "
                                             "after a block's sync() (work left running)")
    device_after_sync_s: float | None = _column("s", "device work still queued after a block's "
                                                "sync(), for GPU backends")
    clock: str | None = _column("", "which clock median_s comes from: `cuda-events` (device "
                                "time of each block) or `host`")
    host_median_s: float | None = _column("s", "the host clock's median beside a device "
                                          "clock's (launch and sync overhead included)")
    launch_overhead_s: float | None = _column("s", "host time to launch one call on an idle "
                                              "device (GPU backends)")
    l2_flush: bool | None = _column("", "the device cache was flushed before every call (a "
                                    "cold GPU cell), outside the timed events")
    cuda_graph: bool | None = _column("", "each block was captured once as a CUDA graph and "
                                      "replayed (`timing.cuda_graphs`)")
    set_aside_causes: str | None = _column("", "what the OS reported for the rounds set aside "
                                           "(cgroup throttling, hypervisor steal, …, with "
                                           "amounts); `unknown (…)` where it cannot tell")
    machine_check: str | None = _column("", "the machine check for this cell: `on`, `off`, or "
                                        "why it gave up judging this machine (data kept)")
    cpu_mhz: float | None = _column("MHz", "median CPU clock read while the group sampled, "
                                    "where the OS reports it")
    above_peak: bool | None = _column("", "gflops exceeded the physical peak: a measuring "
                                      "fault (pct_peak is then left empty); empty when no "
                                      "peak is known")
    info: dict[str, Any] = field(default_factory=dict, metadata={
        "unit": "JSON", "meaning": "whatever else the backend's info() reported (e.g. numpy's "
        "`blas`), as a JSON mapping: nothing a backend says is dropped"})

    def key(self) -> CellKey:
        return CellKey.of(self.as_row())

    def as_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SUMMARY_COLUMNS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SummaryRecord:
        """A record from a table row (missing values become the field's default)."""
        values: dict[str, Any] = {}
        for name in SUMMARY_COLUMNS:
            value = row.get(name)
            if name == "info":
                values[name] = parse_info(value)
            elif not missing(value):
                values[name] = plain_value(value, _HINTS[name])
        return cls(**values)


_HINTS = get_type_hints(SummaryRecord)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str  # int, float, str, bool or json
    unit: str
    meaning: str


def _kind(hint: Any) -> str:
    text = str(hint)
    for kind in ("dict", "bool", "int", "float", "str"):  # dict first: dict[str, Any]
        if kind in text:
            return "json" if kind == "dict" else kind
    raise TypeError(f"no column kind for {hint!r}")


COLUMNS: list[ColumnSpec] = [
    ColumnSpec(spec.name, _kind(_HINTS[spec.name]), spec.metadata["unit"],
               spec.metadata["meaning"]) for spec in fields(SummaryRecord)]
SUMMARY_COLUMNS: list[str] = [c.name for c in COLUMNS]
INTEGER_COLUMNS: list[str] = [c.name for c in COLUMNS if c.kind == "int"]
FLOAT_COLUMNS: list[str] = [c.name for c in COLUMNS if c.kind == "float"]
STRING_COLUMNS: list[str] = [c.name for c in COLUMNS if c.kind == "str"]
BOOL_COLUMNS: list[str] = [c.name for c in COLUMNS if c.kind == "bool"]
#: Flags of the cell key: never missing (an older run's rows get KEY_DEFAULTS).
KEY_FLAG_COLUMNS: list[str] = [c for c in BOOL_COLUMNS if c in CELL_KEY]

assert set(CELL_KEY) <= set(SUMMARY_COLUMNS), "every key axis is a summary column"


def parse_info(value: Any) -> dict[str, Any]:
    """The `info` column's mapping from its JSON text (or a mapping, or nothing)."""
    if isinstance(value, Mapping):
        return dict(value)
    if missing(value) or value == "":
        return {}
    parsed = json.loads(value)
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def info_text(value: Any) -> str:
    """The `info` column as stored in the tables: JSON with sorted keys."""
    def clean(item: Any) -> Any:
        if hasattr(item, "item"):
            item = item.item()
        if isinstance(item, float) and not math.isfinite(item):
            return str(item)
        return item if isinstance(item, (str, int, float, bool)) or item is None else str(item)

    return json.dumps({k: clean(v) for k, v in parse_info(value).items()}, sort_keys=True)


def columns_markdown() -> str:
    """The column table of docs/run-directory.md (tests/test_docs.py checks the doc holds it)."""
    lines = ["| column | type | unit | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.kind} | {c.unit} | {c.meaning} |" for c in COLUMNS]
    return "\n".join(lines)
