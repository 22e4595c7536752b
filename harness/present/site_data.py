"""A results store → what the published site shows: one series per config, cell and
machine (raw and normalised), the steps found in each, and the regressions still open.

The values and steps come from analysis/history.py (`gather`, `detect`), so `qkbench history`
and the site never disagree. A machine is a store's machine folder (records/store.py).

A slowdown step is *open* while the series has not come back: the newest segment's level is
still above the level before the step by more than half of the step (in log terms), so a later
fix closes it and a further slowdown keeps it open.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from qkbench.analysis.history import (
    DEFAULT_DETECTOR,
    MIN_RUNS,
    STEP_THRESHOLD,
    FoundStep,
    detect,
    gather,
)
from qkbench.errors import UsageError
from qkbench.cell_key import CellKey
from qkbench.records.run import load_summaries
from qkbench.records.store import entries, machines


@dataclass
class Series:
    machine: str
    points: list[dict[str, Any]]  # one per run, time order
    steps: dict[str, list[dict[str, Any]]]  # "raw" / "norm" → steps of that view


@dataclass
class CellPage:
    config: str
    cell: CellKey
    slug: str  # the page's file name, without .html
    series: list[Series] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.cell.label()


@dataclass(frozen=True)
class Regression:
    config: str
    cell: str
    machine: str
    commit: str
    run: str
    created_utc: str
    before: float
    after: float
    view: str  # "raw" or "norm": which values the step was found in
    page: str  # the cell page, relative to the site's root

    @property
    def change(self) -> float:
        return self.after / self.before - 1.0


def page_slug(config: str, cell: CellKey) -> str:
    label = cell.label()
    short = hashlib.sha256(f"{config}\0{label}".encode()).hexdigest()[:8]
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60] + "-" + short


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def build(store: Path, normalize_by: str | None = None, threshold: float = STEP_THRESHOLD,
          min_runs: int = MIN_RUNS, detector: str = DEFAULT_DETECTOR
          ) -> tuple[list[CellPage], list[Regression], dict[str, dict[str, Any]]]:
    """(the cell pages, open regressions newest first, the machines' machine.json)."""
    stored = entries(store)
    if not stored:
        raise UsageError(f"{store}: the store holds no runs (add some with 'qkbench store add')")
    by_path = {str(e.path): e for e in stored}  # gather keeps each run's path as given
    # One pass over the runs: `value` is normalised when asked, median_s is always the raw time.
    table = gather(load_summaries([e.path for e in stored]), normalize_by)
    # Steps within one store machine never cross an environment change (its folder is the
    # comparability key), and pandas copies `attrs` deeply on every operation: drop them.
    table.attrs.clear()
    table["machine"] = [by_path[p].machine for p in table["_path"]]
    table["commit"] = [by_path[p].commit for p in table["_path"]]
    if normalize_by is not None and normalize_by not in set(table["backend"]):
        raise UsageError(f"--normalize-by {normalize_by}: no stored run has that backend")
    table["value_norm"] = table["value"]
    table["value"] = table["median_s"].where(table["status"] == "ok").astype(float)
    views = {"raw": table}
    if normalize_by is not None:
        views["norm"] = table.assign(value=table["value_norm"])
    steps = {name: _steps(view, threshold, min_runs, detector) for name, view in views.items()}
    pages = _pages(table, steps, normalize_by is not None)
    regressions = _open_regressions(pages, "norm" if normalize_by else "raw")
    return pages, regressions, machines(store)


def _steps(view: pd.DataFrame, threshold: float, min_runs: int,
           detector: str) -> list[FoundStep]:
    found: list[FoundStep] = []
    for _, part in view.groupby("machine", sort=True):
        found += detect(part, threshold, min_runs, detector)
    return found


def _pages(table: pd.DataFrame, steps: dict[str, list[FoundStep]],
           normalised: bool) -> list[CellPage]:
    at = {(view, s.config, s.cell, s.path): s for view, found in steps.items() for s in found}
    pages = []
    for (config, cell), part in table.groupby(["config", "_cell"], sort=False):
        page = CellPage(str(config), cell, page_slug(str(config), cell))
        for machine, series in part.groupby("machine", sort=True):
            series = series.sort_values("run_index")
            points, marks = [], {"raw": [], "norm": []}
            for i, row in enumerate(series.to_dict("records")):
                value = _number(row["value"])
                point = {"t": row["created_utc"], "commit": row["commit"], "run": row["run"],
                         "status": row["status"], "v": value,
                         "lo": _number(row["ci_low_s"]), "hi": _number(row["ci_high_s"])}
                if normalised:
                    ratio = (_number(row["value_norm"]) or 0.0) / value if value else 0.0
                    point["vn"] = _number(row["value_norm"])
                    point["lon"] = point["lo"] * ratio if point["lo"] and ratio else None
                    point["hin"] = point["hi"] * ratio if point["hi"] and ratio else None
                points.append(point)
                for view in marks:
                    step = at.get((view, config, cell, row["_path"]))
                    if step is not None:
                        marks[view].append({"i": i, "before": step.before, "after": step.after,
                                            "change": step.change, "commit": row["commit"],
                                            "t": row["created_utc"]})
            page.series.append(Series(str(machine), points, marks))
        pages.append(page)
    return pages


def _open_regressions(pages: Sequence[CellPage], view: str) -> list[Regression]:
    found = []
    key = "vn" if view == "norm" else "v"
    for page in pages:
        for series in page.series:
            values = [p[key] for p in series.points if p.get(key)]
            marks = series.steps[view]
            if not values or not marks:
                continue
            newest = math.log(float(np.median(_newest_segment(series, marks, key))))
            for mark in marks:
                rise = math.log(mark["after"] / mark["before"])
                if rise <= 0 or newest - math.log(mark["before"]) <= rise / 2:
                    continue
                point = series.points[mark["i"]]
                found.append(Regression(page.config, page.title, series.machine, point["commit"],
                                        point["run"], point["t"], mark["before"],
                                        mark["after"], view, f"cells/{page.slug}.html"))
    return sorted(found, key=lambda r: (r.created_utc, r.change), reverse=True)


def _newest_segment(series: Series, marks: list[dict[str, Any]], key: str) -> list[float]:
    start = max(m["i"] for m in marks)
    return [p[key] for p in series.points[start:] if p.get(key)]
