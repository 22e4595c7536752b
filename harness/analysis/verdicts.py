"""A comparison's result and how it reads: the verdict rule (`Rule`), each cell's verdict
(`CellResult`), the comparison (`Comparison`), and its renderings — the console table, the
Markdown a pull request comment shows, and JSON. The verdicts are computed in
analysis/compare.py (two runs) and analysis/paired.py (one run of several environments)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qkbench.analysis.bootstrap import CONFIDENCE, RESAMPLES, SEED
from qkbench.cell_key import CELL_KEY, KEY_DEFAULTS
from qkbench.units import value_text

DEFAULT_THRESHOLD = 0.10
MIN_SAMPLES = 6  # the fewest with an order-statistic 95% interval of the median (qkbench.measure.stats)


# Output order: what needs attention first.
VERDICT_ORDER = ("slower", "faster", "not comparable", "only in baseline", "only in candidate",
                 "same", "reference")


@dataclass(frozen=True)
class Rule:
    """How sure and how large a change must be before a cell is called slower or faster."""

    threshold: float = DEFAULT_THRESHOLD
    per_backend: Mapping[str, float] = field(default_factory=dict)
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = SEED
    min_samples: int = MIN_SAMPLES

    def threshold_for(self, backend: str) -> float:
        return self.per_backend.get(backend, self.threshold)

    def decide(self, ci_low: float, ci_high: float, threshold: float) -> str:
        if ci_low > 1.0 + threshold:
            return "slower"
        if ci_high < 1.0 / (1.0 + threshold):
            return "faster"
        return "same"

    def inconclusive(self, verdict: str, ci_low: float, ci_high: float, threshold: float
                     ) -> str:
        """The note of a `same` whose interval reaches past the threshold, else ''."""
        if verdict == "same" and (ci_high > 1.0 + threshold or ci_low < 1.0 / (1.0 + threshold)):
            return f"inconclusive: the interval reaches beyond ±{100 * threshold:g}%"
        return ""

    def describe(self) -> str:
        pct = f"{100 * self.threshold:g}%"
        return (f"slower = the {100 * self.confidence:g}% interval of the ratio lies above "
                f"1 + {pct}, faster = below 1 / (1 + {pct})")


@dataclass(frozen=True)
class CellResult:
    key: dict[str, Any]  # the cell key's columns (CellKey.as_dict())
    verdict: str
    baseline: float = math.nan  # median (seconds), or median normalised value
    candidate: float = math.nan
    ratio: float = math.nan  # candidate / baseline
    ci_low: float = math.nan
    ci_high: float = math.nan
    threshold: float = math.nan
    baseline_samples: int = 0
    candidate_samples: int = 0
    baseline_status: str = ""
    candidate_status: str = ""
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    baseline: Path
    candidate: Path
    rule: Rule
    normalize_by: str | None
    cells: list[CellResult]
    environment_differences: list[str]
    commits: tuple[str | None, str | None] = (None, None)
    runs: tuple[int, int] = (1, 1)  # run directories pooled on each side
    # Candidate's machine speed / baseline's from the runs' calibration readings
    # ("one_thread", "all_threads"); empty when a side has none (older runs).
    machine_shift: dict[str, float] = field(default_factory=dict)
    between: tuple[str, str] | None = None  # a paired comparison's environments (paired.py)

    @property
    def machine_shift_exceeds_threshold(self) -> bool:
        """The machine itself moved by more than the verdict threshold between the sides."""
        return any(abs(ratio - 1.0) > self.rule.threshold for ratio in
                   self.machine_shift.values())

    def counts(self) -> dict[str, int]:
        found = {v: 0 for v in VERDICT_ORDER}
        for cell in self.cells:
            found[cell.verdict] += 1
        return found

    @property
    def exit_code(self) -> int:
        return 1 if self.counts()["slower"] else 0

    def ordered(self) -> list[CellResult]:
        """Regressions first (largest first), then improvements, then the rest."""
        def order(cell: CellResult) -> tuple[int, float]:
            ratio = cell.ratio if not math.isnan(cell.ratio) else 1.0
            return VERDICT_ORDER.index(cell.verdict), -ratio if cell.verdict == "slower" else ratio
        return sorted(self.cells, key=order)

    @property
    def regressions(self) -> list[CellResult]:
        """The cells called slower, largest slowdown first."""
        return [cell for cell in self.ordered() if cell.verdict == "slower"]

    @property
    def table(self) -> pd.DataFrame:
        """One row per cell: its key columns, then verdict, medians, ratio and interval."""
        rows = [{**cell.key, **{k: v for k, v in asdict(cell).items() if k != "key"}}
                for cell in self.ordered()]
        return pd.DataFrame(rows)

    def to_markdown(self) -> str:
        """The table a pull request comment shows (rendered below)."""
        return to_markdown(self)

    def to_text(self) -> str:
        return to_text(self)

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    def headline(self) -> str:
        counts = self.counts()
        text = f"{counts['slower']} slower, {counts['faster']} faster, {counts['same']} same"
        for verdict in ("not comparable", "only in baseline", "only in candidate"):
            if counts[verdict]:
                text += f", {counts[verdict]} {verdict}"
        return text


# ---------------------------------------------------------------------------------------------
# Renderings


def _shown_key_columns(cells: Sequence[CellResult]) -> list[str]:
    """Key columns worth a table column: the shape always, the rest only when they vary or
    differ from their defaults."""
    shown = []
    for column in CELL_KEY:
        values = {c.key[column] for c in cells}
        default = KEY_DEFAULTS.get(column, object())
        if column in ("backend", "dtype", "n", "m", "d_k") or values - {default}:
            shown.append(column)
    return shown


def _rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    cells = comparison.ordered()
    columns = _shown_key_columns(cells)
    unit = f" (÷ {comparison.normalize_by})" if comparison.normalize_by else ""
    header = columns + [f"baseline{unit}", f"candidate{unit}", "ratio", "95% interval",
                        "verdict", "note"]
    rows = []
    for cell in cells:
        keys = ["" if cell.key[c] is None else str(cell.key[c]) for c in columns]
        interval = ("-" if math.isnan(cell.ci_low)
                    else f"[{cell.ci_low:.3f}, {cell.ci_high:.3f}]")
        note = cell.note
        if cell.verdict in ("slower", "faster"):
            change = f"{100 * (cell.ratio - 1):+.1f}% (threshold {100 * cell.threshold:g}%)"
            note = f"{change}; {note}" if note else change
        rows.append(keys + [value_text(cell.baseline, comparison.normalize_by is not None),
                            value_text(cell.candidate, comparison.normalize_by is not None),
                            "-" if math.isnan(cell.ratio) else f"{cell.ratio:.3f}", interval,
                            cell.verdict, note])
    return header, rows


def _context_lines(comparison: Comparison) -> list[str]:
    if comparison.between is not None:
        base, cand = comparison.between
        lines = [f"baseline:  environment {base} of {comparison.baseline}"
                 + _commit(comparison.commits[0], 1),
                 f"candidate: environment {cand} of {comparison.candidate}"
                 + _commit(comparison.commits[1], 1),
                 "paired: each round's candidate time ÷ the baseline's in the same round and "
                 "worker slot; the interval resamples the slots, then their rounds"]
    else:
        lines = [f"baseline:  {comparison.baseline}"
                 + _commit(comparison.commits[0], comparison.runs[0]),
                 f"candidate: {comparison.candidate}"
                 + _commit(comparison.commits[1], comparison.runs[1])]
    how = comparison.rule.describe()
    if comparison.rule.per_backend:
        how += " (" + ", ".join(f"{b}: {100 * t:g}%"
                                for b, t in sorted(comparison.rule.per_backend.items())) + ")"
    lines.append(f"rule: {how}")
    if comparison.normalize_by:
        lines.append(f"normalised: each sample ÷ {comparison.normalize_by}'s median in the same "
                     "run, group and interleaving round")
    if comparison.environment_differences and comparison.between is not None:
        lines.append("environments differ in: " + "; ".join(comparison.environment_differences))
    elif comparison.environment_differences:
        lines.append("note: the runs' environments differ (allowed): "
                     + "; ".join(comparison.environment_differences))
    if comparison.machine_shift:
        lines.append("machine: the candidate's own speed was "
                     + ", ".join(f"{ratio:.2f}x ({kind.replace('_', ' ')})" for kind, ratio in
                                 comparison.machine_shift.items())
                     + " the baseline's (calibration readings in meta.json)")
        if comparison.machine_shift_exceeds_threshold and min(comparison.runs) == 1:
            lines.append(f"note: the machine itself shifted by more than the threshold "
                         f"(±{100 * comparison.rule.threshold:g}%) between the runs: one run a "
                         "side cannot support a verdict; pool five runs a side (a folder of "
                         "runs each)")
    if min(comparison.runs) == 1 and comparison.counts()["slower"] and not comparison.between:
        # Measured with benchmarks/aa_false_alarms.py on a 2-vCPU VM (docs/regressions-in-ci.md):
        # unchanged code raised an alarm in 1 of 30 single-run pairs normalised, 18 of 30 raw;
        # none of 20 with five runs a side, which caught 30 of 30 25% slowdowns normalised.
        lines.append("note: one run on a side — on a shared machine whole runs shift by 10-20% "
                     "between them; confirm with five runs a side (a folder of runs)")
    return lines


def _commit(commit: str | None, runs: int) -> str:
    facts = [f"{runs} runs pooled"] if runs > 1 else []
    if commit:
        facts.append(f"commit {commit[:10]}")
    return f" ({', '.join(facts)})" if facts else ""


def to_text(comparison: Comparison) -> str:
    """The terminal table."""
    header, rows = _rows(comparison)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = _context_lines(comparison) + [""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines += ["", comparison.headline()]
    return "\n".join(lines)


def to_markdown(comparison: Comparison) -> str:
    """A GitHub job summary or PR comment: the headline, then the table, regressions first."""
    counts = comparison.counts()
    mark = "🔴" if counts["slower"] else "🟢"
    header, rows = _rows(comparison)
    lines = [f"### {mark} qkbench compare: {comparison.headline()}", ""]
    lines += [f"- {_md_escape(line)}" for line in _context_lines(comparison)]
    lines += ["", "| " + " | ".join(header) + " |",
              "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_json(comparison: Comparison) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    return {
        "baseline": str(comparison.baseline), "candidate": str(comparison.candidate),
        "baseline_commit": comparison.commits[0], "candidate_commit": comparison.commits[1],
        "baseline_runs": comparison.runs[0], "candidate_runs": comparison.runs[1],
        "normalize_by": comparison.normalize_by,
        "between": list(comparison.between) if comparison.between else None,
        "machine_shift": {kind: round(ratio, 4) for kind, ratio in
                          comparison.machine_shift.items()},
        "machine_shift_exceeds_threshold": comparison.machine_shift_exceeds_threshold,
        "rule": {"threshold": comparison.rule.threshold,
                 "threshold_for": dict(comparison.rule.per_backend),
                 "confidence": comparison.rule.confidence,
                 "resamples": comparison.rule.resamples, "seed": comparison.rule.seed,
                 "min_samples": comparison.rule.min_samples,
                 "description": comparison.rule.describe()},
        "environment_differences": comparison.environment_differences,
        "counts": comparison.counts(), "headline": comparison.headline(),
        "cells": [{**{k: clean(v) for k, v in cell.key.items()}, "verdict": cell.verdict,
                   "baseline": clean(cell.baseline), "candidate": clean(cell.candidate),
                   "ratio": clean(cell.ratio), "ci_low": clean(cell.ci_low),
                   "ci_high": clean(cell.ci_high), "threshold": clean(cell.threshold),
                   "baseline_samples": cell.baseline_samples,
                   "candidate_samples": cell.candidate_samples,
                   "baseline_status": cell.baseline_status,
                   "candidate_status": cell.candidate_status, "note": cell.note}
                  for cell in comparison.ordered()],
    }
