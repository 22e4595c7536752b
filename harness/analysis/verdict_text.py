"""A comparison for people and machines: the console table, the Markdown a pull
request comment shows, and JSON. Formatting only: the verdicts are made in analysis/compare.py."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from qkbench.cell_key import CELL_KEY, KEY_DEFAULTS
from qkbench.units import value_text

if TYPE_CHECKING:
    from qkbench.analysis.compare import CellResult, Comparison


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
