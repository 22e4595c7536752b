"""Step 6: rows → tidy tables in the run directory. Nothing finished is ever lost.

Each finished cell is appended to ``cells.jsonl`` (its summary row) and ``samples.jsonl`` (its
raw samples) and flushed at once, so a run that dies keeps every finished cell. At the end the
tables are written as Parquet and CSV — each first to a temporary name and then renamed, so a
half-written table is never visible. CSV floats are written in full (repr) precision: a
sub-microsecond time must survive the round trip.

Run directory:
    meta.json        environment fingerprint, the config, how the run ended
    summary.parquet  one row per cell (columns: SUMMARY_COLUMNS)
    summary.csv      the same, for people and spreadsheets
    samples.parquet  one row per raw sample (columns: SAMPLE_COLUMNS)
    cells.jsonl, samples.jsonl   the append-only log the tables are built from
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from qkbench.plan.sweep import Cell
from qkbench.measure.timing import MIN_FIT_SAMPLES, SamplingResult

STATUSES = ("ok", "mismatch", "skipped", "error", "crashed", "timeout", "oom")
FAILED_STATUSES = ("mismatch", "error", "crashed", "timeout", "oom")

# The columns that identify a cell: two runs' rows with equal keys measured the same thing.
CELL_KEY = ["backend", "dtype", "n", "m", "d_k", "phase", "cache", "threads_requested"]
# Values of key columns for run directories written before those columns existed.
KEY_DEFAULTS = {"phase": "kernel", "cache": "warm", "threads_requested": pd.NA}

SUMMARY_COLUMNS = [
    "backend", "device", "dtype", "precision", "n", "m", "d_k", "phase", "cache",
    "threads_requested", "status", "reason",
    "median_s", "ci_low_s", "ci_high_s", "rel_ci", "samples", "calls_per_sample", "converged",
    "stopped_by", "first_call_s", "cache_copies", "flops", "bytes", "intensity", "gflops", "gbps",
    "peak_gflops", "pct_peak", "max_err", "mean_err", "err_bound", "checked_rows", "threads",
    "library_version", "device_name", "peak_device_bytes", "sm_clock_start_mhz",
    "sm_clock_end_mhz", "temperature_start_c", "temperature_end_c", "power_start_w",
    "power_end_w", "throttled", "processes", "foreign_load", "unfit_share",
    # GPU timing: which clock median_s comes from ("cuda-events" or "host"), the host clock's
    # median beside it, the host time of one launch, an L2 flush before each call (cold cache
    # without copies), and whether each block was a replayed CUDA graph.
    "clock", "host_median_s", "launch_overhead_s", "l2_flush", "cuda_graph",
]
SAMPLE_COLUMNS = ["backend", "device", "dtype", "precision", "n", "m", "d_k", "phase", "cache",
                  "threads_requested", "round", "t_start", "seconds", "calls", "machine_fit",
                  "host_seconds"]
_INTEGER_COLUMNS = ["n", "m", "d_k", "threads_requested", "samples", "calls_per_sample",
                    "cache_copies", "flops", "bytes", "checked_rows", "threads",
                    "peak_device_bytes", "processes"]
_FLOAT_COLUMNS = ["median_s", "ci_low_s", "ci_high_s", "rel_ci", "first_call_s", "intensity",
                  "gflops", "gbps", "peak_gflops", "pct_peak", "max_err", "mean_err",
                  "err_bound", "sm_clock_start_mhz", "sm_clock_end_mhz", "temperature_start_c",
                  "temperature_end_c", "power_start_w", "power_end_w", "foreign_load",
                  "unfit_share", "host_median_s", "launch_overhead_s"]
_STRING_COLUMNS = ["backend", "device", "dtype", "precision", "phase", "cache", "status",
                   "reason", "stopped_by", "library_version", "device_name", "clock"]
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def min_bytes(cell: Cell) -> int:
    """Fewest bytes the kernel must move: each input read once, the output written once."""
    shape = cell.shape
    return (shape.n * shape.d_k + shape.m * shape.d_k + shape.n * shape.m) * ITEMSIZE[cell.dtype]


def summary_row(cell: Cell, device: str, status: str, reason: str = "",
                figures: dict[str, Any] | None = None,
                sampling: SamplingResult | None = None,
                peak_gflops: float | None = None) -> dict[str, Any]:
    """One cell's row; figures a status does not have stay empty (NaN), never zero."""
    assert status in STATUSES, status
    row: dict[str, Any] = {col: None for col in SUMMARY_COLUMNS}
    flops, nbytes = cell.shape.flops, min_bytes(cell)
    row.update(cell.key(), device=device, precision=cell.dtype, status=status, reason=reason,
               flops=flops, bytes=nbytes, intensity=flops / nbytes, samples=0, converged=False,
               peak_gflops=peak_gflops)
    for name, value in (figures or {}).items():
        if name in row and name not in CELL_KEY:
            row[name] = value
    if sampling is not None and sampling.samples:
        measured = sampling.measured
        row["samples"] = len(measured)
        row["unfit_share"] = sampling.unfit_share
        row["stopped_by"] = sampling.stopped_by
        row["converged"] = sampling.converged
        ci = sampling.ci()
        per_call = sorted(s.seconds for s in measured)
        median = ci.median if ci else per_call[len(per_call) // 2]
        row["median_s"] = median
        row["gflops"] = flops / median / 1e9 if median > 0 else math.inf
        row["gbps"] = nbytes / median / 1e9 if median > 0 else math.inf
        if peak_gflops:
            row["pct_peak"] = 100.0 * row["gflops"] / peak_gflops
        if ci is not None:
            row.update(ci_low_s=ci.low, ci_high_s=ci.high, rel_ci=ci.rel_halfwidth)
        host = sorted(s.host_seconds for s in measured if s.host_seconds is not None)
        if host:
            row["host_median_s"] = host[len(host) // 2]
        elif row["clock"] in (None, "host"):
            row["host_median_s"] = median  # the primary clock is the host's
    return row


def sample_rows(cell: Cell, device: str, precision: str,
                sampling: SamplingResult) -> list[dict[str, Any]]:
    key = {**cell.key(), "device": device, "precision": precision}
    return [{**key, **asdict(sample), "machine_fit": sample.round not in sampling.unfit_rounds}
            for sample in sampling.samples]


def kept_mask(samples: pd.DataFrame, cell_columns: list[str]) -> pd.Series:
    """Which samples a run's figures come from: those of rounds the machine check kept, unless
    a cell (rows equal on `cell_columns`) has too few of them, when all of its samples count
    (`SamplingResult.measured` makes the same choice while running)."""
    fit = samples["machine_fit"].astype(bool)
    fit_per_cell = fit.groupby([samples[c] for c in cell_columns], dropna=False).transform("sum")
    return fit | (fit_per_cell < MIN_FIT_SAMPLES)


def key_of(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row's cell key as a hashable tuple (NaN and NA read back from a log become None)."""
    return tuple(None if _missing(row.get(column)) else row.get(column) for column in CELL_KEY)


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def finished_keys(folder: Path) -> set[tuple[Any, ...]]:
    """The keys of the cells a run directory's log already holds."""
    return {key_of(row) for row in read_jsonl(folder / "cells.jsonl")}


def repair_log(folder: Path) -> None:
    """Make an interrupted run's log safe to append to: drop a torn last line, and drop the
    samples of a cell whose row never made it (samples are written first), so that re-running
    that cell leaves no duplicates."""
    rows = read_jsonl(folder / "cells.jsonl")
    done = {key_of(row) for row in rows}
    samples = [s for s in read_jsonl(folder / "samples.jsonl") if key_of(s) in done]
    for name, records in (("cells.jsonl", rows), ("samples.jsonl", samples)):
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in records)
        write_atomically(folder / name, lambda tmp, text=text: tmp.write_text(text))


class RunWriter:
    """Owns one run directory: the append-only log while running, the tables at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._cells = open(folder / "cells.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._samples = open(folder / "samples.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def append(self, row: dict[str, Any], samples: list[dict[str, Any]]) -> None:
        """Persist one finished cell: samples first, so a logged row always has its samples."""
        self.append_samples(samples)
        self._cells.write(json.dumps(row, default=_json_default) + "\n")
        self._flush(self._cells)

    def append_samples(self, samples: list[dict[str, Any]]) -> None:
        for sample in samples:
            self._samples.write(json.dumps(sample, default=_json_default) + "\n")
        self._flush(self._samples)

    @staticmethod
    def _flush(handle: Any) -> None:
        handle.flush()
        os.fsync(handle.fileno())

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_atomically(self.folder / "meta.json",
                         lambda tmp: tmp.write_text(json.dumps(meta, indent=2, default=str)))

    def finish(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Build and write the final tables from the log; returns (summary, samples)."""
        self._cells.close()
        self._samples.close()
        summary, samples = read_log(self.folder)
        write_atomically(self.folder / "summary.parquet", lambda t: summary.to_parquet(t, index=False))
        write_atomically(self.folder / "summary.csv", lambda t: summary.to_csv(t, index=False))
        write_atomically(self.folder / "samples.parquet", lambda t: samples.to_parquet(t, index=False))
        return summary, samples


def read_log(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables from a run's append-only log; a torn last line (a killed run) is skipped."""
    summary = typed_summary(pd.DataFrame(read_jsonl(folder / "cells.jsonl")))
    samples = typed_samples(pd.DataFrame(read_jsonl(folder / "samples.jsonl")))
    return summary, samples


def typed_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary with every column present (older runs get key defaults) and typed."""
    frame = _with_columns(frame, SUMMARY_COLUMNS)
    if "precision" in frame and frame["precision"].isna().any():
        frame["precision"] = frame["precision"].fillna(frame["dtype"])
    for column in _FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["converged"] = frame["converged"].fillna(False).astype(bool)
    frame["throttled"] = frame["throttled"].astype("boolean")  # empty: no clock was read
    for column in ("l2_flush", "cuda_graph"):  # empty: a run from before GPU timing
        frame[column] = frame[column].astype("boolean")
    return frame


def typed_samples(frame: pd.DataFrame) -> pd.DataFrame:
    frame = _with_columns(frame, SAMPLE_COLUMNS)
    if frame["precision"].isna().any():
        frame["precision"] = frame["precision"].fillna(frame["dtype"])
    for column in ("t_start", "seconds", "host_seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("round", "calls"):
        frame[column] = pd.array(frame[column], dtype="Int64")
    # Runs from before the machine check counted every sample.
    frame["machine_fit"] = frame["machine_fit"].astype("boolean").fillna(True).astype(bool)
    return frame


def _with_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    for column in columns:
        if column not in frame:
            frame[column] = KEY_DEFAULTS.get(column, None)
        if column in _INTEGER_COLUMNS:
            frame[column] = pd.array(pd.to_numeric(frame[column], errors="coerce"), dtype="Int64")
        elif column in _STRING_COLUMNS:
            frame[column] = frame[column].astype("string")
    return frame[columns]


def load_run(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(summary, samples, meta) of a finished run directory, with defaults for columns older
    runs lack. Raises UsageError when the folder is not a run directory."""
    from qkbench.errors import UsageError

    if not folder.is_dir():
        raise UsageError(f"run directory not found: {folder}")
    if not (folder / "summary.parquet").is_file():
        raise UsageError(f"{folder} is not a finished run directory (no summary.parquet)")
    try:
        summary = typed_summary(pd.read_parquet(folder / "summary.parquet"))
        samples_path = folder / "samples.parquet"
        samples = typed_samples(pd.read_parquet(samples_path) if samples_path.is_file()
                                else pd.DataFrame())
        meta_path = folder / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read run directory {folder}: {exc}") from None
    return summary, samples, meta


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # only the last line of a killed run can be torn
    return out


def write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    return str(value)
