"""Many run directories of one config → a timeline per cell, and the steps in it.

`compare` answers "is this change slower than that one?"; history answers "when did this cell
get slower, and did it stay slower?". Runs are ordered by when they were made
(meta.json environment.created_utc, then git commit), one value per run and cell: the median
time, or with `normalize_by` the ratio to the reference backend's median in the same run
(which cancels machines that were faster or slower on the day).

A step is a lasting change. Two detectors find them: by default `l1`, the least-cost
piecewise-constant fit of analysis/l1_steps.py (weighted L1 cost and a penalty per step);
with `segmentation`, the split of a cell's series that maximises the difference between
the median before and the median after, with at least `min_runs` runs on each side nearer
that side's median than the other's (one odd run, or a change seen twice, is not a step). It
is kept when the shift exceeds the threshold and stands clear of the run-to-run scatter (3
robust standard deviations, estimated from the median of successive differences, which a
step barely moves). Each side is then searched again, so a series can
hold several steps; each step's before/after medians are those of its final neighbouring
segments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from qkbench.analysis.verdicts import DEFAULT_THRESHOLD
from qkbench.machine.environment import environment_differences
from qkbench.analysis.compare import read_run
from qkbench.analysis.l1_steps import find_steps_l1
from qkbench.errors import UsageError
from qkbench.cell_key import CELL_KEY, CellKey
from qkbench.records.run import Run
from qkbench.units import value_text

MIN_RUNS = 3
#: How steps are found: "l1" (the penalised weighted L1 fit of analysis/l1_steps.py, the
#: default) or "segmentation" (find_steps below). benchmarks/step_detection.py measured both
#: (docs/history.md): at this machine's noise l1 finds 97% of 10% steps with 99% precision,
#: segmentation 77%, and neither reports a step in unchanged series.
DETECTORS = ("l1", "segmentation")
DEFAULT_DETECTOR = "l1"
#: The smallest lasting change history and publish report by default. It sits below the
#: 10% that matters: a 10% step is measured as 9.x% about half the time.
STEP_THRESHOLD = 0.05
# Scale factor that turns a median absolute deviation into a standard deviation (normal data).
MAD_TO_SD = 1.4826
NOISE_MULTIPLE = 3.0


@dataclass(frozen=True)
class Step:
    index: int  # position (in the series) of the first run after the change
    before: float  # median of the values before it (within its segment)
    after: float

    @property
    def change(self) -> float:
        return self.after / self.before - 1.0


def find_steps(values: Sequence[float], threshold: float = DEFAULT_THRESHOLD,
               min_runs: int = MIN_RUNS) -> list[Step]:
    """Lasting changes in a series, by binary segmentation on medians (see the module doc)."""
    logs = np.log(np.asarray(values, dtype=float))
    if not np.all(np.isfinite(logs)):
        raise ValueError("find_steps needs positive, finite values")
    # Run-to-run scatter from successive differences: a step moves one difference only, so the
    # median of them sees the noise and not the steps.
    noise = (MAD_TO_SD * float(np.median(np.abs(np.diff(logs)))) / math.sqrt(2.0)
             if len(logs) > 1 else 0.0)
    needed = max(math.log1p(threshold), NOISE_MULTIPLE * noise)
    splits: list[int] = []

    def search(lo: int, hi: int) -> None:
        candidates = []
        for split in range(lo + min_runs, hi - min_runs + 1):
            before, after = logs[lo:split], logs[split:hi]
            shift = float(np.median(after) - np.median(before))
            cost = float(np.abs(before - np.median(before)).sum()
                         + np.abs(after - np.median(after)).sum())
            candidates.append((split, shift, cost))
        if not candidates:
            return
        largest = max(abs(shift) for _, shift, _ in candidates)
        if largest <= needed:
            return
        # Medians move little when the split slides by a run or two, so several splits tie for
        # the largest shift; the one that leaves both sides tightest is where the change is.
        split = min((c for c in candidates if abs(c[1]) >= 0.9 * largest),
                    key=lambda c: c[2])[0]
        # Lasting: at least min_runs runs on each side sit nearer their own side's median.
        before, after = logs[lo:split], logs[split:hi]
        middle = 0.5 * (float(np.median(before)) + float(np.median(after)))
        rising = np.median(after) > np.median(before)
        if (min(np.sum((before < middle) == rising), np.sum((after > middle) == rising))
                < min_runs):
            return
        splits.append(split)
        search(lo, split)
        search(split, hi)

    search(0, len(logs))
    bounds = [0] + sorted(splits) + [len(logs)]
    steps = []
    for before_lo, split, after_hi in zip(bounds, bounds[1:], bounds[2:]):
        before = float(np.exp(np.median(logs[before_lo:split])))
        after = float(np.exp(np.median(logs[split:after_hi])))
        if abs(math.log(after / before)) > needed:  # judged again between its final neighbours
            steps.append(Step(split, before, after))
    return steps


# ---------------------------------------------------------------------------------------------
# Gathering runs


def gather(runs: Sequence[Path | Run], normalize_by: str | None = None,
           config: str | None = None) -> pd.DataFrame:
    """One row per run and cell, runs in time order; `value` is what steps are found in.
    `runs` are run directories (`records.run.find_runs` finds them in folders and stores), or
    runs already read (e.g. by `load_summaries`)."""
    frames, environments = [], {}
    for given in runs:
        run = read_run(given)
        folder, about = run.path, run.about
        env = about.environment
        name = run.config_name
        if config is not None and name != config:
            continue
        summary = run.summary
        value = summary["median_s"].where(summary["status"] == "ok")
        if normalize_by is not None:
            ok_ref = summary[(summary["backend"] == normalize_by) & (summary["status"] == "ok")]
            reference = dict(zip(ok_ref["_group"], ok_ref["median_s"]))
            value = value / summary["_group"].map(reference).astype(float)
        frame = pd.DataFrame({
            "config": name, "run": folder.name, "created_utc": about.created_utc,
            "commit": (about.commit or "")[:10], "dirty": about.dirty,
            "machine": _machine(env), **{c: summary[c] for c in CELL_KEY},
            "status": summary["status"], "median_s": summary["median_s"],
            "ci_low_s": summary["ci_low_s"], "ci_high_s": summary["ci_high_s"],
            "value": value.astype(float), "_cell": summary["_cell"], "_path": str(folder),
        })
        frames.append(frame)
        environments[str(folder)] = env
    if not frames:
        raise UsageError(f"no run of config {config!r} among the runs given"
                         if config else "no runs found")
    table = pd.concat(frames, ignore_index=True)
    order = (table[["created_utc", "commit", "run", "_path"]].drop_duplicates()
             .sort_values(["created_utc", "commit", "run"]).reset_index(drop=True))
    table["run_index"] = table["_path"].map({p: i for i, p in enumerate(order["_path"])})
    table = table.sort_values(["config", "run_index"], kind="stable").reset_index(drop=True)
    table.attrs["environments"] = environments
    return table


def _machine(env: dict[str, Any]) -> str:
    cpu = env.get("cpu") or {}
    if not cpu:
        return ""
    return f"{cpu.get('model', '?')} ×{cpu.get('logical_cores', '?')}"


@dataclass(frozen=True)
class FoundStep:
    config: str
    cell: CellKey
    run: str  # the first run after the change
    path: str  # its directory (run names need not be unique across folders)
    commit: str
    before: float
    after: float
    environment_change: list[str]

    @property
    def change(self) -> float:
        return self.after / self.before - 1.0


def series_steps(series: pd.DataFrame, threshold: float, min_runs: int,
                 detector: str = DEFAULT_DETECTOR) -> list[Step]:
    """The steps of one cell's ok runs (time order), by the chosen detector. The l1 detector
    weighs each run by its own precision: 1 / the half-width of its interval, in log terms."""
    values = series["value"].tolist()
    if detector == "segmentation":
        return find_steps(values, threshold, min_runs)
    if detector != "l1":
        raise UsageError(f"unknown step detector {detector!r} (known: {', '.join(DETECTORS)})")
    low, high = (series[c].to_numpy(dtype=float) for c in ("ci_low_s", "ci_high_s"))
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = 2.0 / np.log(high / low)
    return [Step(index, before, after)
            for index, before, after in find_steps_l1(values, threshold, min_runs, weights)]


def detect(table: pd.DataFrame, threshold: float = STEP_THRESHOLD,
           min_runs: int = MIN_RUNS, detector: str = DEFAULT_DETECTOR) -> list[FoundStep]:
    """Steps of every cell's series (ok runs only), with any environment change at the step."""
    environments = table.attrs.get("environments", {})
    found = []
    for (config, cell), series in table.groupby(["config", "_cell"], sort=False):
        series = series[series["value"].notna() & (series["value"] > 0)]
        series = series.sort_values("run_index")
        for step in series_steps(series, threshold, min_runs, detector):
            at, previous = series.iloc[step.index], series.iloc[step.index - 1]
            changed = environment_differences(environments.get(previous["_path"], {}),
                                              environments.get(at["_path"], {}))
            found.append(FoundStep(config, cell, at["run"], at["_path"], at["commit"],
                                   step.before, step.after, changed))
    return found


def mark_steps(table: pd.DataFrame, steps: Sequence[FoundStep]) -> pd.DataFrame:
    marked = {(s.config, s.cell, s.path) for s in steps}
    table = table.copy()
    table["step"] = [(c, k, p) in marked
                     for c, k, p in zip(table["config"], table["_cell"], table["_path"])]
    return table


# ---------------------------------------------------------------------------------------------
# Output


def cell_label(cell: CellKey) -> str:
    return cell.label()


def to_text(table: pd.DataFrame, steps: Sequence[FoundStep], normalize_by: str | None,
            last: int = 10) -> str:
    """Per config: the runs, then one line per cell with its value in each (the last `last`
    runs; history.csv has them all), a ▲/▼ before the value where a step begins."""
    lines = []
    marked = {(s.config, s.cell, s.path): s for s in steps}
    for config, part in table.groupby("config", sort=False):
        runs = part[["run_index", "run", "created_utc", "commit", "machine"]].drop_duplicates(
            "run_index").sort_values("run_index")
        shown = runs.tail(last)
        lines.append(f"config {config}: {len(runs)} run(s)"
                     + (f", showing the last {last}" if len(runs) > last else ""))
        for number, (_, run) in enumerate(shown.iterrows(), start=len(runs) - len(shown) + 1):
            lines.append(f"  #{number:<3} {run['created_utc'] or '?':25} "
                         f"{run['commit'] or '-':10}  {run['machine']:30}  {run['run']}")
        index_to_number = {i: n for n, i in enumerate(runs["run_index"], start=1)}
        header = ["cell"] + [f"#{index_to_number[i]}" for i in shown["run_index"]]
        rows = []
        for cell, series in part.groupby("_cell", sort=False):
            by_run = dict(zip(series["run_index"], zip(series["value"], series["status"],
                                                       series["_path"])))
            row = [cell_label(cell)]
            for i in shown["run_index"]:
                if i not in by_run:
                    row.append("")
                    continue
                value, status, path = by_run[i]
                text = value_text(value, normalize_by is not None) if status == "ok" else status
                step = marked.get((config, cell, path))
                if step is not None:
                    text = ("▲ " if step.change > 0 else "▼ ") + text
                row.append(text)
            rows.append(row)
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        lines.append("")
        lines.append("  ".join(h.rjust(w) if i else h.ljust(w)
                               for i, (h, w) in enumerate(zip(header, widths))))
        for row in rows:
            lines.append("  ".join(c.rjust(w) if i else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(row, widths))))
        lines.append("")
    lines.append(steps_text(steps, normalize_by))
    return "\n".join(lines)


def steps_text(steps: Sequence[FoundStep], normalize_by: str | None) -> str:
    if not steps:
        return "no lasting change found"
    lines = [f"{len(steps)} lasting change(s):"]
    for step in steps:
        before = value_text(step.before, normalize_by is not None)
        after = value_text(step.after, normalize_by is not None)
        word = "slower" if step.change > 0 else "faster"
        text = (f"  {step.config}: {cell_label(step.cell)}: {100 * step.change:+.1f}% ({word}) "
                f"from run {step.run}" + (f" (commit {step.commit})" if step.commit else "")
                + f": {before} → {after}")
        if step.environment_change:
            text += "; the environment changed there too: " + "; ".join(step.environment_change)
        lines.append(text)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line
