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

from harness.sweep import Cell
from harness.timing import SamplingResult

STATUSES = ("ok", "mismatch", "skipped", "error", "crashed", "timeout", "oom")
FAILED_STATUSES = ("mismatch", "error", "crashed", "timeout", "oom")

SUMMARY_COLUMNS = [
    "backend", "device", "dtype", "n", "m", "d_k", "status", "reason",
    "median_s", "ci_low_s", "ci_high_s", "rel_ci", "samples", "calls_per_sample", "converged",
    "stopped_by", "first_call_s", "flops", "gflops", "max_err", "mean_err", "err_bound",
    "checked_rows", "threads", "library_version",
]
SAMPLE_COLUMNS = ["backend", "device", "dtype", "n", "m", "d_k", "round", "t_start", "seconds",
                  "calls"]
_INTEGER_COLUMNS = ["n", "m", "d_k", "samples", "calls_per_sample", "flops", "checked_rows",
                    "threads"]


def summary_row(cell: Cell, device: str, status: str, reason: str = "",
                figures: dict[str, Any] | None = None,
                sampling: SamplingResult | None = None) -> dict[str, Any]:
    """One cell's row; figures a status does not have stay empty (NaN), never zero."""
    assert status in STATUSES, status
    row: dict[str, Any] = {col: None for col in SUMMARY_COLUMNS}
    row.update(cell.key(), device=device, status=status, reason=reason,
               flops=cell.shape.flops, samples=0, converged=False)
    for name, value in (figures or {}).items():
        if name in row:
            row[name] = value
    if sampling is not None and sampling.samples:
        row["samples"] = len(sampling.samples)
        row["stopped_by"] = sampling.stopped_by
        row["converged"] = sampling.converged
        ci = sampling.ci()
        per_call = sorted(s.seconds for s in sampling.samples)
        median = ci.median if ci else per_call[len(per_call) // 2]
        row["median_s"] = median
        row["gflops"] = cell.shape.flops / median / 1e9 if median > 0 else math.inf
        if ci is not None:
            row.update(ci_low_s=ci.low, ci_high_s=ci.high, rel_ci=ci.rel_halfwidth)
    return row


def sample_rows(cell: Cell, device: str, sampling: SamplingResult) -> list[dict[str, Any]]:
    key = {**cell.key(), "device": device}
    return [{**key, **asdict(sample)} for sample in sampling.samples]


class RunWriter:
    """Owns one run directory: the append-only log while running, the tables at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._cells = open(folder / "cells.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._samples = open(folder / "samples.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def append(self, row: dict[str, Any], samples: list[dict[str, Any]]) -> None:
        """Persist one finished cell: samples first, so a logged row always has its samples."""
        for sample in samples:
            self._samples.write(json.dumps(sample) + "\n")
        self._flush(self._samples)
        self._cells.write(json.dumps(row, default=_json_default) + "\n")
        self._flush(self._cells)

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
    rows = _read_jsonl(folder / "cells.jsonl")
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS) if rows else \
        pd.DataFrame({c: pd.Series(dtype="object") for c in SUMMARY_COLUMNS})
    for column in _INTEGER_COLUMNS:
        summary[column] = pd.array(summary[column], dtype="Int64")
    for column in ("median_s", "ci_low_s", "ci_high_s", "rel_ci", "first_call_s", "gflops",
                   "max_err", "mean_err", "err_bound"):
        summary[column] = pd.to_numeric(summary[column], errors="coerce").astype("float64")
    summary["converged"] = summary["converged"].astype(bool)
    for column in ("backend", "device", "dtype", "status", "reason", "stopped_by",
                   "library_version"):
        summary[column] = summary[column].astype("string")
    samples = pd.DataFrame(_read_jsonl(folder / "samples.jsonl"), columns=SAMPLE_COLUMNS)
    return summary, samples


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
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
