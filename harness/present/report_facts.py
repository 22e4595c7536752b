"""Presentation, what a report holds (`Report`, built by present/report.py) and the facts both
renderings show: counts, the fastest backend per shape, the failed and skipped cells, the
machine. Formatting only; nothing is measured here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from qkbench.analysis.verdicts import Comparison, Rule
from qkbench.present import plots
from qkbench.present.figures import style
from qkbench.present.runset import cpu_identity
from qkbench.records.record import FAILED_STATUSES
from qkbench.units import format_seconds

# Verdicts a report counts, in the order it lists them: compare's words (one rule, one vocabulary).
VERDICTS = ("slower", "faster", "same", "not comparable")


@dataclass
class Report:
    runs: plots.RunSet
    figures: plots.Figures
    baseline: plots.RunSet | None  # --baseline RUN, compared cell by cell
    comparison: pd.DataFrame  # empty without a baseline
    created: str
    rule: Rule = field(default_factory=Rule)  # the verdict rule: compare's
    # The first run's environments compared round by round (`compare --between`), when it has
    # two or more: the first two, or the two given.
    paired: Comparison | None = None



def counts(summary: pd.DataFrame) -> dict[str, int]:
    return {status: int(count) for status, count in summary["status"].value_counts().items()}


def counts_text(summary: pd.DataFrame) -> str:
    found = counts(summary)
    order = ["ok", *FAILED_STATUSES, "skipped"]
    parts = [f"{found[s]} {s}" for s in order if found.get(s)]
    parts += [f"{c} {s}" for s, c in found.items() if s not in order]
    return f"{len(summary)} cells: " + " · ".join(parts) if parts else "no cells"


def fastest(runs: plots.RunSet) -> pd.DataFrame:
    """Per machine, dtype and variant: the fastest backend at the largest shape measured (the
    one the sweep was most likely made for)."""
    ok = runs.ok
    if ok.empty:
        return ok
    rows = []
    for _, group in ok.groupby(["machine", "dtype", "phase", "cache", "threads_key"],
                               sort=False):
        flops = group["flops"].max()
        largest = group[group["flops"] == flops]
        rows.append(largest.loc[largest["median_s"].idxmin()])
    order = {m: i for i, m in enumerate(runs.machines)}
    frame = rank_rows(pd.DataFrame(rows))
    frame["_m"] = frame["machine"].map(order)
    return frame.sort_values(["_m", *RANK_COLUMNS], kind="stable")


def variant_words(row: Any) -> str:
    words = style.variant_word_list(row, ("phase", "cache", "threads_key", "precision"),
                                 all_words=False)
    return ", ".join(words)


def shape_text(row: Any) -> str:
    return f"n={row['n']} m={row['m']} d_k={row['d_k']}"


def format_ci(row: Any) -> str:
    if pd.isna(row["ci_low_s"]) or pd.isna(row["ci_high_s"]):
        return "-"
    return f"{format_seconds(row['ci_low_s'])} – {format_seconds(row['ci_high_s'])}"


def format_rel(value: Any) -> str:
    return "-" if pd.isna(value) else f"±{100 * value:.1f}%"


def format_number(value: Any, digits: int = 3) -> str:
    if value is None or pd.isna(value):
        return "-"
    if not math.isfinite(value):
        return "∞"
    return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def rank_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort keys that put defaults first: float16 < … < float64, kernel before end-to-end, warm
    before cold, the library's own thread count before explicit ones."""
    return frame.assign(
        _t=frame["dtype"].map(style.dtype_rank),
        _p=frame["phase"].map(lambda p: (p != "kernel", p)),
        _c=frame["cache"].map(lambda c: (c != "warm", c)),
        _h=frame["threads_key"].map(lambda t: (t != "", int(t) if t.isdigit() else 0)))


RANK_COLUMNS = ["_t", "d_k", "_p", "_c", "_h"]


def sort_cells(frame: pd.DataFrame, machines: list[str]) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(machines)}
    backends = {b: i for i, b in enumerate(dict.fromkeys(frame["backend"]))}
    ranked = rank_rows(frame).assign(_m=frame["machine"].map(order),
                                   _b=frame["backend"].map(backends))
    return ranked.sort_values(["_m", *RANK_COLUMNS, "n", "m", "_b"], kind="stable").drop(
        columns=["_m", "_b", *[c for c in RANK_COLUMNS if c.startswith("_")]])


def problems(runs: plots.RunSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(failed cells, one by one; skipped cells grouped by machine, backend and reason)."""
    summary = runs.summary
    failed = sort_cells(summary[summary["status"].isin(FAILED_STATUSES)], runs.machines)
    skipped = summary[summary["status"] == "skipped"]
    groups = []
    for (machine, backend, reason), group in skipped.groupby(["machine", "backend", "reason"],
                                                             sort=False):
        groups.append({"machine": machine, "backend": backend, "reason": reason,
                       "cells": len(group), "which": _which(group)})
    return failed, pd.DataFrame(groups)


def _which(group: pd.DataFrame) -> str:
    """'float64 · n 16–1024 · d_k 16, 64': which cells a group covers, briefly."""
    parts = [", ".join(sorted(set(group["dtype"]), key=style.dtype_rank))]
    for column in ("n", "d_k"):
        values = sorted({int(v) for v in group[column].dropna()})
        if len(values) > 3:
            parts.append(f"{column} {values[0]}–{values[-1]}")
        elif values:
            parts.append(f"{column} {', '.join(map(str, values))}")
    return " · ".join(parts)


def machine_facts(run: plots.RunInfo) -> dict[str, str]:
    """The fingerprint of one run's machine as label → text, for the machines table."""
    env = run.environment
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    facts: dict[str, str] = {"host": str(env.get("hostname") or "unknown")}
    cores = cpu.get("logical_cores")
    usable = cpu.get("usable_cores")
    core_text = f"{cores} logical cores" if cores else ""
    if usable and cores and usable != cores:
        core_text += f" ({usable} usable)"
    if cpu.get("quota_cores") is not None:
        core_text += f", CPU quota {cpu['quota_cores']:g} cores ({cpu.get('quota_source')})"
    cpu_text = ", ".join(p for p in (str(cpu.get("model") or ""), cpu_identity(cpu), core_text)
                         if p)
    if cpu_text:
        facts["CPU"] = cpu_text
    if cpu.get("flags"):
        facts["CPU features"] = " ".join(map(str, cpu["flags"]))
    if env.get("memory_gib") is not None:
        facts["memory"] = f"{env['memory_gib']} GiB"
    gpus = [g for g in env.get("gpus") or [] if isinstance(g, dict)]
    facts["GPUs"] = "; ".join(
        ", ".join(str(x) for x in (g.get("name"), f"{g['memory_gib']} GiB"
                                   if g.get("memory_gib") is not None else None,
                                   f"driver {g['driver']}" if g.get("driver") else None) if x)
        for g in gpus) or "none recorded"
    peaks = env.get("peaks") if isinstance(env.get("peaks"), dict) else {}
    nested = [(d, peaks[d]) for d in ("cpu", "gpu") if isinstance(peaks.get(d), dict)]
    for device, record in nested or ([("", peaks)] if peaks else []):
        text = _peaks_text(record)
        if text:
            facts[f"peaks{' ' + device.upper() if device else ''}"] = text
    for key, label in (("os", "OS"), ("python", "Python")):
        if env.get(key):
            facts[label] = str(env[key])
    blas = [b for b in env.get("blas") or [] if isinstance(b, dict)]
    if blas:
        facts["NumPy's BLAS"] = "; ".join(
            f"{b.get('library')} {b.get('version') or ''} ({b.get('threads')} threads"
            + (f", {b['architecture']}" if b.get("architecture") else "") + ")" for b in blas)
    variables = env.get("library_env") if isinstance(env.get("library_env"), dict) else {}
    if variables:
        facts["library environment"] = " ".join(f"{k}={v}" for k, v in variables.items())
    for warning in env.get("library_env_warnings") or []:
        facts.setdefault("environment warnings", "")
        facts["environment warnings"] += ("; " if facts["environment warnings"] else "") + \
            str(warning).removeprefix("warning: ")
    libraries = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    if libraries:
        facts["libraries"] = ", ".join(f"{k} {v}" for k, v in libraries.items())
    about = run.about
    if env.get("qkbench_version"):
        version = f"qkbench {env['qkbench_version']}"
        if about.commit:
            version += f" @ {about.commit[:10]}" + (" (uncommitted changes)"
                                                    if about.dirty else "")
        facts["qkbench"] = version
    for key in ("hardware_key", "comparability_key"):
        if env.get(key):
            facts[key.replace("_", " ")] = str(env[key])
    run_text = f"{run.folder.name}"
    if run.config_name:
        run_text += f" · sweep '{run.config_name}'"
    if about.created_utc:
        run_text += f" · started {about.created_utc}"
    if about.state:
        run_text += f" · {about.state}"
    if about.wall_s is not None:
        run_text += f" in {format_seconds(about.wall_s)}"
    facts["run"] = run_text
    return facts


def _peaks_text(record: dict[str, Any]) -> str:
    parts = [f"memory {format_number(v)} GB/s" if k == "bandwidth_gbs"
             else f"{k} {format_number(v)} GFLOP/s" for k, v in record.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if parts and record.get("source"):
        parts.append(f"source: {record['source']}")
    return ", ".join(parts)
