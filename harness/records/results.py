"""Rows → tidy tables in the run directory. Nothing finished is ever lost.

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

Reading a run directory back is records/run.py's (`load_run`), which also names these files
for every other module; this writer and that reader are the only two that spell them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from qkbench.measure.cell import CellFigures
from qkbench.measure.timing import MIN_FIT_SAMPLES, SamplingResult
from qkbench.plan.sweep import Cell

# The cell key is declared once, in qkbench.cell_key; the columns and their types in
# records/record.py.
from qkbench.cell_key import CELL_KEY, KEY_DEFAULTS, CellKey
from qkbench.records.record import (
    FAILED_STATUSES,  # noqa: F401  (re-exported)
    FLOAT_COLUMNS,
    INTEGER_COLUMNS,
    KEY_FLAG_COLUMNS,
    STATUSES,
    STRING_COLUMNS,
    SUMMARY_COLUMNS,
    SummaryRecord,
    info_text,
)

# A sample carries its cell's key (and the device and precision it ran with), in the summary's
# column order, then what is its own.
SAMPLE_COLUMNS = [*(c for c in SUMMARY_COLUMNS if c in CELL_KEY or c in ("device", "precision")),
                  "round", "t_start", "seconds", "calls", "machine_fit", "set_aside_cause",
                  "host_seconds"]
from qkbench.plan.config import ITEMSIZE


def min_bytes(cell: Cell) -> int:
    """Fewest bytes the kernel must move: each input read once (K once per key head, however
    many query heads share it), the output written once (masked entries too: S holds −inf)."""
    shape = cell.shape
    return (shape.q_elements + shape.k_elements + shape.s_elements) * ITEMSIZE[cell.dtype]


def summary_row(cell: Cell, device: str, status: str, reason: str = "",
                figures: CellFigures | None = None,
                sampling: SamplingResult | None = None,
                peak_gflops: float | None = None) -> dict[str, Any]:
    """One cell's row; figures a status does not have stay empty (NaN), never zero."""
    assert status in STATUSES, status
    row: dict[str, Any] = {col: None for col in SUMMARY_COLUMNS}
    flops, nbytes = cell.shape.flops, min_bytes(cell)
    row.update(cell.key.as_dict(), device=device, precision=cell.dtype, status=status, reason=reason,
               flops=flops, bytes=nbytes, intensity=flops / nbytes, samples=0, converged=False,
               peak_gflops=peak_gflops, info={})
    columns = (figures or CellFigures()).columns()
    # What the backend's info() reported: a fact with a column of its own goes there, anything
    # else is kept in the `info` mapping, never dropped.
    for name, value in columns.pop("info", {}).items():
        if name in row and name not in CELL_KEY and name != "info":
            row[name] = value
        else:
            row["info"][name] = value
    row.update(columns)  # every figure but the working ones is a column (tests/test_records)
    if sampling is not None and sampling.samples:
        measured = sampling.measured
        row["samples"] = len(measured)
        row["unfit_share"] = sampling.unfit_share
        row["stopped_by"] = sampling.stopped_by
        row["converged"] = sampling.converged
        ci = sampling.ci()
        median = sampling.median()
        row["median_s"] = median
        row["gflops"] = flops / median / 1e9 if median > 0 else math.inf
        row["gbps"] = nbytes / median / 1e9 if median > 0 else math.inf
        if peak_gflops:
            # The peak is a physical limit (machine.cpu_peak): a row above it is a measuring
            # fault, flagged, and its percentage is not shown as if it were an achievement.
            pct = 100.0 * row["gflops"] / peak_gflops
            row["above_peak"] = pct > 100.0
            row["pct_peak"] = None if pct > 100.0 else pct
        if status == "ok" and not row["reason"]:
            row["reason"] = sampling.unconverged_reason()
        if ci is not None:
            row.update(ci_low_s=ci.low, ci_high_s=ci.high, rel_ci=ci.rel_halfwidth)
        host = sorted(s.host_seconds for s in measured if s.host_seconds is not None)
        if host:
            row["host_median_s"] = host[len(host) // 2]
        elif row["clock"] in (None, "host"):
            row["host_median_s"] = median  # the primary clock is the host's
    return SummaryRecord(**row).as_row()  # a key that is not a declared column fails here


def sample_rows(cell: Cell, device: str, precision: str,
                sampling: SamplingResult) -> list[dict[str, Any]]:
    key = {**cell.key.as_dict(), "device": device, "precision": precision}
    aside = sampling.set_aside_rounds
    return [{**key, **asdict(sample), "machine_fit": sample.round not in aside,
             "set_aside_cause": _round_cause(sampling, sample.round)}
            for sample in sampling.samples]


def _round_cause(sampling: SamplingResult, round_number: int) -> str:
    """Why a sample's round was set aside: the OS's causes, or the machine check; '' if kept."""
    if round_number in sampling.caused_rounds:
        return ",".join(sorted(sampling.caused_rounds[round_number]))
    return "machine check" if round_number in sampling.unfit_rounds else ""


def kept_mask(samples: pd.DataFrame, cell_columns: list[str]) -> pd.Series:
    """Which samples a run's figures come from: those of rounds the machine check kept, unless
    a cell (rows equal on `cell_columns`) has too few of them, when all of its samples count
    (`SamplingResult.measured` makes the same choice while running)."""
    fit = samples["machine_fit"].astype(bool)
    fit_per_cell = fit.groupby([samples[c] for c in cell_columns], dropna=False).transform("sum")
    return fit | (fit_per_cell < MIN_FIT_SAMPLES)


def finished_keys(folder: Path) -> set[CellKey]:
    """The keys of the cells a run directory's log already holds."""
    return {CellKey.of(row) for row in read_jsonl(folder / "cells.jsonl")}


def repair_log(folder: Path) -> None:
    """Make an interrupted run's log safe to append to: drop a torn last line, and drop the
    samples of a cell whose row never made it (samples are written first), so that re-running
    that cell leaves no duplicates."""
    rows = read_jsonl(folder / "cells.jsonl")
    done = {CellKey.of(row) for row in rows}
    samples = [s for s in read_jsonl(folder / "samples.jsonl") if CellKey.of(s) in done]
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

    def append_log(self, cell_lines: list[str], sample_lines: list[str]) -> None:
        """Persist many cells at once, as log lines already in the log's JSON (a merge): one
        write and one fsync per file instead of one per cell, samples first as in `append`."""
        for handle, lines in ((self._samples, sample_lines), (self._cells, cell_lines)):
            handle.write("".join(line if line.endswith("\n") else line + "\n"
                                 for line in lines))
            self._flush(handle)

    def finish(self, logged: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Build and write the final tables from the log; returns (summary, samples).
        `logged`: the log's rows and samples, already read (a merge has them parsed: reading
        the log back would parse every sample a second time)."""
        self._cells.close()
        self._samples.close()
        if logged is None:
            summary, samples = read_log(self.folder)
        else:
            summary = typed_summary(pd.DataFrame(logged[0]))
            samples = typed_samples(pd.DataFrame(logged[1]))
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
    for column in FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["converged"] = frame["converged"].fillna(False).astype(bool)
    frame["throttled"] = frame["throttled"].astype("boolean")  # empty: no clock was read
    frame["reason"] = frame["reason"].fillna("")
    frame["info"] = pd.array([info_text(v) for v in frame["info"]], dtype="string")
    frame["above_peak"] = frame["above_peak"].astype("boolean")  # empty: no peak known
    frame["kv_materialised"] = frame["kv_materialised"].astype("boolean")  # empty: not grouped
    frame["quota_measured"] = frame["quota_measured"].astype("boolean")  # empty: no quota
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
    frame["set_aside_cause"] = frame["set_aside_cause"].astype("string").fillna(
        frame["machine_fit"].map({True: "", False: "machine check"}))
    return frame


def _with_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    for column in columns:
        if column not in frame:
            frame[column] = KEY_DEFAULTS.get(column, None)
        if column in INTEGER_COLUMNS:
            frame[column] = pd.array(pd.to_numeric(frame[column], errors="coerce"), dtype="Int64")
        elif column in STRING_COLUMNS:
            frame[column] = frame[column].astype("string")
        elif column in KEY_FLAG_COLUMNS:
            frame[column] = frame[column].astype("boolean").fillna(False).astype(bool)
    return frame[columns]


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
