"""Two runs (or two sets of runs) → a verdict per cell: slower, faster, same, …

The question CI asks is "did this change make a kernel slower?", and a check that cries wolf is
soon ignored, so a cell is called slower only when two things hold at once (the rule asv uses):

* the change is statistically significant: the confidence interval of the ratio of medians
  (candidate / baseline) excludes 1, and
* the change is large enough to matter: it exceeds a threshold (10% unless told otherwise).

Both are folded into one test: **slower when the whole interval lies above 1 + t, faster when
it lies below 1 / (1 + t)**, same otherwise. Why not the weaker "ratio above 1 + t and interval
above 1": an interval computed from one run only knows the noise *within* that run. Two runs
of unchanged code also differ as wholes (frequency scaling, other tenants, where the buffers
landed), and that shift is in no interval from one pair of runs. Demanding the whole interval
beyond the threshold makes the threshold the allowance for it; `benchmarks/aa_false_alarms.py`
measures both rules on real A/A runs. The faster bound is 1 / (1 + t), not 1 − t, so swapping
baseline and candidate swaps slower and faster exactly.

The interval is a seeded percentile bootstrap of the ratio of medians over the raw per-call
samples (samples.parquet), each side resampled on its own: timings are skewed and the ratio of
two medians has no simple formula. A side may be a folder of several runs of one config: their
samples are pooled, and since its few runs are its only independent units, the interval is the
wider of the bootstrap's and a t interval of the runs' medians (`between_runs_interval`), which
keeps A/A comparisons quiet on a machine whose runs differ as wholes.

Drift-proof mode (`normalize_by`): the harness samples all backends of a group in interleaved
rounds, so a shared machine's drift falls on all of them within a round. Each sample is divided
by the reference backend's median in the same run, group and round, and those values compared
as above: a machine 40% slower today slows the reference as much, and they do not move.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The statistics (bootstrap.py) and the verdicts with their renderings (verdicts.py) live
# beside this module.
from qkbench.analysis.bootstrap import between_runs_interval, bootstrap_ratio, cell_seed
from qkbench.analysis.verdicts import CellResult, Comparison, Rule
from qkbench.errors import UsageError
from qkbench.machine import calibration
from qkbench.machine.environment import environment_differences
from qkbench.machine.contention import BUSY_CORES
from qkbench.records.record import missing
from qkbench.cell_key import CellKey
from qkbench.records.results import kept_mask
from qkbench.records.run import Run, find_runs, is_run_dir, load_run

# ---------------------------------------------------------------------------------------------
# Reading runs


def read_run(folder: Path | Run) -> Run:
    """A run through the one loader, with its cell keys (`_cell`, `_group`) added."""
    return load_run(folder).keyed()


@dataclass
class _Side:
    """One side of a comparison: one run directory, or several runs of one config pooled."""

    path: Path
    runs: list[Run]
    rows: list[dict[CellKey, pd.Series]] = field(default_factory=list)  # per run

    def __post_init__(self) -> None:
        self.rows = [{row["_cell"]: row for _, row in run.summary.iterrows()}
                     for run in self.runs]

    def cells(self) -> list[CellKey]:
        return list(dict.fromkeys(cell for rows in self.rows for cell in rows))

    def backends(self) -> set[str]:
        return {cell.backend for cell in self.cells()}

    def state(self, cell: CellKey) -> tuple[str, str]:
        """(status, problem): 'ok' and '' when the cell is ok in every run of this side."""
        rows = [rows.get(cell) for rows in self.rows]
        statuses = ["missing" if row is None else str(row["status"]) for row in rows]
        if all(status == "ok" for status in statuses):
            return "ok", ""
        if len(rows) == 1:
            reason = _text(rows[0]["reason"]) if rows[0] is not None else ""
            return statuses[0], statuses[0] + (f" ({reason})" if reason else "")
        bad = [status for status in statuses if status != "ok"]
        return ("mixed", f"{', '.join(sorted(set(bad)))} in {len(bad)} of {len(rows)} runs")

    def foreign_load(self, cell: CellKey) -> float | None:
        """The most CPU other processes used while this cell sampled, over this side's runs
        (cores; None for runs written before the harness measured it)."""
        loads = [float(row["foreign_load"]) for rows in self.rows
                 if (row := rows.get(cell)) is not None and "foreign_load" in row
                 and not missing(row["foreign_load"])]
        return max(loads) if loads else None

    @property
    def commit(self) -> str | None:
        commits = {run.commit for run in self.runs}
        return commits.pop() if len(commits) == 1 else "several"


def read_side(path: Path | Run) -> _Side:
    """A run directory or a `Run` already read, or a folder holding run directories of one
    config (pooled; found by `records.run.find_runs`)."""
    if isinstance(path, Run):
        return _Side(path.path, [read_run(path)])
    path = Path(path)
    if not path.is_dir() or is_run_dir(path):
        return _Side(path, [read_run(path)])
    runs = [read_run(p) for p in find_runs([path])]
    names = sorted({str(run.about.config_name) for run in runs})
    if len(names) > 1:
        raise UsageError(f"{path} holds runs of several configs ({', '.join(names)}); "
                         "pool the runs of one config only")
    return _Side(path, runs)


# ---------------------------------------------------------------------------------------------
# Comparing


def compare_runs(baseline: Path | Run, candidate: Path | Run, rule: Rule | None = None,
                 normalize_by: str | None = None, allow_different_machines: bool = False
                 ) -> Comparison:
    """Give every cell of either side a verdict. Each side is a run directory, a `Run` already
    in memory (nothing is read again), or a folder of run directories of one config whose
    samples are pooled (see `bootstrap_ratio`)."""
    rule = rule or Rule()
    base, cand = read_side(baseline), read_side(candidate)
    first = base.runs[0]
    differences = list(dict.fromkeys(
        d for run in base.runs[1:] + cand.runs
        for d in environment_differences(first.environment, run.environment)))
    if differences and not allow_different_machines:
        raise UsageError("baseline and candidate ran on different machines or software ("
                         + "; ".join(differences)
                         + "); pass --allow-different-machines to compare anyway")
    backends = base.backends() | cand.backends()
    unknown = sorted(set(rule.per_backend) - backends)
    if unknown:
        raise UsageError(f"--threshold-for names {', '.join(unknown)}, which neither run has "
                         f"(backends: {', '.join(sorted(backends))})")
    if normalize_by is not None:
        for side, name in ((base, "baseline"), (cand, "candidate")):
            if normalize_by not in side.backends():
                raise UsageError(f"--normalize-by {normalize_by}: the {name} has no backend "
                                 f"{normalize_by!r} (it has: {', '.join(sorted(side.backends()))})")
    values = ([_values(run, normalize_by) for run in base.runs],
              [_values(run, normalize_by) for run in cand.runs])
    base_cells, cand_cells = base.cells(), set(cand.cells())
    cells = []
    for cell in base_cells + [c for c in cand.cells() if c not in set(base_cells)]:
        key = cell.as_dict()
        if cell not in cand_cells:
            cells.append(CellResult(key, "only in baseline", baseline_status=base.state(cell)[0]))
        elif cell not in base_cells:
            cells.append(CellResult(key, "only in candidate",
                                    candidate_status=cand.state(cell)[0]))
        else:
            cells.append(_compare_cell(key, cell, base, cand, values, rule, normalize_by))
    shift = calibration.shift([run.about.calibration for run in base.runs],
                              [run.about.calibration for run in cand.runs])
    return Comparison(base.path, cand.path, rule, normalize_by, cells, differences,
                      (base.commit, cand.commit), (len(base.runs), len(cand.runs)), shift)


def _values(run: Run, normalize_by: str | None) -> dict[CellKey, list[np.ndarray]]:
    """Per cell, the values compared — seconds per call, or those divided by the reference
    backend's median in the same group and round — one array per worker process.

    The harness samples round r of a cell in worker process r mod `processes`, and a process
    can be steadily faster or slower than its siblings (where its buffers landed). Keeping the
    processes apart lets the bootstrap resample them as units, so that spread widens the
    interval instead of hiding in a pooled median."""
    samples = run.samples[np.isfinite(run.samples["seconds"]) & (run.samples["seconds"] > 0)]
    samples = samples[kept_mask(samples, ["_cell"])]  # the samples the run's figures used
    if normalize_by is not None:
        reference = samples[samples["backend"] == normalize_by]
        level = reference.groupby(["_group", "round"])["seconds"].median().rename("_level")
        samples = samples.join(level, on=["_group", "round"], how="inner")
        samples = samples.assign(seconds=samples["seconds"] / samples["_level"])
    processes = _processes_per_cell(run.summary)
    out: dict[CellKey, list[np.ndarray]] = {}
    for cell, group in samples.groupby("_cell", sort=False):
        process = group["round"].to_numpy(dtype=np.int64) % processes.get(cell, 1)
        seconds = group["seconds"].to_numpy(dtype=float)
        out[cell] = [seconds[process == p] for p in np.unique(process)]
    return out


def _processes_per_cell(summary: pd.DataFrame) -> dict[CellKey, int]:
    """How many worker processes each cell was sampled in (1 for runs that predate it)."""
    if "processes" not in summary:
        return {}
    return {row["_cell"]: int(row["processes"]) for _, row in summary.iterrows()
            if not missing(row["processes"]) and int(row["processes"]) > 1}


def _compare_cell(key: dict[str, Any], cell: CellKey, base: _Side, cand: _Side,
                  values: tuple[list[dict[CellKey, list[np.ndarray]]], ...], rule: Rule,
                  normalize_by: str | None) -> CellResult:
    (b_status, b_problem), (c_status, c_problem) = base.state(cell), cand.state(cell)
    statuses = {"baseline_status": b_status, "candidate_status": c_status}
    threshold = rule.threshold_for(key["backend"])
    if normalize_by is not None and key["backend"] == normalize_by:
        return CellResult(key, "reference", threshold=threshold, **statuses,
                          note="the backend the others are divided by")
    problems = [f"{name} {problem}" for name, problem in (("baseline", b_problem),
                                                         ("candidate", c_problem)) if problem]
    if normalize_by is not None and not problems:
        reference = replace(cell, backend=normalize_by)
        for side, name in ((base, "baseline"), (cand, "candidate")):
            problem = side.state(reference)[1]
            if problem:
                problems.append(f"the reference {normalize_by} in the {name}: {problem}")
    if problems:
        return CellResult(key, "not comparable", threshold=threshold, **statuses,
                          note="; ".join(problems))
    # The resampled units: every worker process of every run of a side.
    b_runs = [part for v in values[0] if cell in v for part in v[cell] if len(part)]
    c_runs = [part for v in values[1] if cell in v for part in v[cell] if len(part)]
    b_count, c_count = sum(map(len, b_runs)), sum(map(len, c_runs))
    counts = {"baseline_samples": b_count, "candidate_samples": c_count}
    if min(b_count, c_count) < rule.min_samples:
        what = "values in rounds shared with " + normalize_by if normalize_by else "samples"
        return CellResult(key, "not comparable", threshold=threshold, **statuses, **counts,
                          note=f"too few {what} ({b_count} baseline, {c_count} "
                               f"candidate; at least {rule.min_samples} needed)")
    rng = np.random.default_rng([rule.seed, cell_seed(cell)])
    ratio, low, high = bootstrap_ratio(b_runs, c_runs, rule.confidence, rule.resamples, rng)
    notes = []
    between = between_runs_interval(*(_run_medians(v, cell) for v in values), rule.confidence)
    if between is not None and (between[0] < low or between[1] > high):
        low, high = min(low, between[0]), max(high, between[1])
        notes.append("interval widened by how much the runs of a side differ")
    verdict = rule.decide(low, high, threshold)
    notes += [note for note in [rule.inconclusive(verdict, low, high, threshold)] if note]
    for side, name in ((base, "baseline"), (cand, "candidate")):
        notes += [note for note in [busy_note(name, side.foreign_load(cell))] if note]
    note = "; ".join(notes)
    return CellResult(key, verdict, float(np.median(np.concatenate(b_runs))),
                      float(np.median(np.concatenate(c_runs))), ratio, low, high, threshold,
                      **counts, **statuses, note=note)


def busy_note(side: str, load: float | None) -> str:
    """Contention slows multi-threaded backends unequally (qkbench.machine.contention): a
    verdict from such a run may be the machine's, not the code's."""
    if load is not None and load > BUSY_CORES:
        return f"{side} sampled while other processes kept {load:.2f} cores busy"
    return ""


def _run_medians(runs: list[dict[CellKey, list[np.ndarray]]], cell: CellKey) -> list[float]:
    return [float(np.median(np.concatenate(v[cell]))) for v in runs if cell in v]


def _text(value: Any) -> str:
    return "" if missing(value) else str(value)
