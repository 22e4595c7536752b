"""One run of several environments → a verdict per cell from paired rounds.

A run with environments (`qkbench run --env base=... --env pr=...`) samples every backend in
each environment's workers, all of a group's members in the same rounds. For a cell, the
candidate's time in a round is divided by the base's in that round: whatever slowed the whole
machine for that stretch (drift, its thermal state, a noisy neighbour) slowed both, and
cancels. Round r of every member runs in its worker slot r mod `processes`, so the ratios come
in one group per slot; each slot pairs two processes of their own, whose buffers landed where
they landed, so the slots are the independent units: the interval is the two-stage bootstrap
of the median ratio (`bootstrap_median`: the slots with replacement, then each drawn slot's
rounds), and the verdict is `compare`'s rule (`Rule.decide`) on it. Tables, Markdown, JSON and
exit codes are `compare`'s too (a `Comparison`).

Pairing removes the shift between whole runs that the two-run threshold (10%) allows for, so
paired verdicts get a threshold of their own, `PAIRED_THRESHOLD`, chosen from A/A paired runs
(benchmarks/paired_false_alarms.py, docs/regressions-in-ci.md).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from qkbench.analysis.bootstrap import bootstrap_median, cell_seed
from qkbench.analysis.verdicts import CellResult, Comparison, Rule
from qkbench.analysis.compare import busy_note, read_run
from qkbench.errors import UsageError
from qkbench.records.record import missing
from qkbench.cell_key import CellKey
from qkbench.records.run import Run

# Chosen from 20 A/A paired runs of the `ci` sweep plus the test subject on the quiet 2-vCPU Zen 5
# VM (benchmarks/paired_false_alarms.py; docs/regressions-in-ci.md): none raised an alarm at any
# threshold from 1% up, the highest interval low end of an unchanged cell was 1.011, and 3%
# keeps about two points above it while still catching a 5% slowdown in 5 of 6 runs and a 10%
# one in 6 of 6.
PAIRED_THRESHOLD = 0.03


def compare_between(run: Path | Run, base: str, candidate: str, rule: Rule | None = None
                    ) -> Comparison:
    """Every cell of environment `base` against the same cell of `candidate`, in one run."""
    rule = rule or Rule(threshold=PAIRED_THRESHOLD)
    run = read_run(run)
    names = list(run.about.environments)
    for name in (base, candidate):
        if name not in names:
            has = ", ".join(names) if names else "none (it was run without --env)"
            raise UsageError(f"--between: {run.path} has no environment {name!r} "
                             f"(its environments: {has})")
    if base == candidate:
        raise UsageError("--between needs two different environments")
    backends = set(run.summary["backend"])
    unknown = sorted(set(rule.per_backend) - backends)
    if unknown:
        raise UsageError(f"--threshold-for names {', '.join(unknown)}, which the run does not "
                         f"have (backends: {', '.join(sorted(backends))})")
    rows = {row["_cell"]: row for _, row in run.summary.iterrows()}
    rounds = _round_values(run)
    cells = []
    for cell in [key for key in rows if key.environment == base]:
        other = replace(cell, environment=candidate)
        pair = replace(cell, environment=None)  # the row of the table: the cell, both sides
        if other not in rows:
            cells.append(CellResult(pair.as_dict(), "only in baseline",
                                    baseline_status=str(rows[cell]["status"])))
            continue
        cells.append(_paired_cell(pair, rows[cell], rows[other], rounds.get(cell),
                                  rounds.get(other), rule))
    for cell in [key for key in rows if key.environment == candidate]:
        if replace(cell, environment=base) not in rows:
            cells.append(CellResult(replace(cell, environment=None).as_dict(),
                                    "only in candidate",
                                    candidate_status=str(rows[cell]["status"])))
    return Comparison(run.path, run.path, rule, None, cells, _differences(run, base, candidate),
                      (_commit(run, base), _commit(run, candidate)), (1, 1), {},
                      between=(base, candidate))


def _round_values(run: Run) -> dict[CellKey, pd.Series]:
    """Per cell, its time per call in each round it sampled (the median of the round's
    samples). Rounds set aside for a cause the OS reported count too: both sides sampled in
    them, so the cause slowed both, and setting them aside (all of them, at a load of 10 on 2
    cores) left cells with no round in common."""
    samples = run.samples[np.isfinite(run.samples["seconds"]) & (run.samples["seconds"] > 0)]
    return {cell: group.groupby("round")["seconds"].median()
            for cell, group in samples.groupby("_cell", sort=False)}


def _paired_cell(pair: CellKey, base_row: pd.Series, cand_row: pd.Series,
                 base: pd.Series | None, cand: pd.Series | None, rule: Rule) -> CellResult:
    key = pair.as_dict()
    threshold = rule.threshold_for(pair.backend)
    statuses = {"baseline_status": str(base_row["status"]),
                "candidate_status": str(cand_row["status"])}
    problems = [f"{side} {row['status']}" + (f" ({row['reason']})" if row["reason"] else "")
                for side, row in (("baseline", base_row), ("candidate", cand_row))
                if row["status"] != "ok"]
    if problems:
        return CellResult(key, "not comparable", threshold=threshold, **statuses,
                          note="; ".join(problems))
    both = pd.concat([base, cand], axis=1, join="inner", keys=["base", "cand"]) \
        if base is not None and cand is not None else pd.DataFrame()
    counts = {"baseline_samples": len(both), "candidate_samples": len(both)}
    if len(both) < rule.min_samples:
        return CellResult(key, "not comparable", threshold=threshold, **statuses, **counts,
                          note=f"too few rounds sampled in both environments ({len(both)}; "
                               f"at least {rule.min_samples} needed)")
    ratios = (both["cand"] / both["base"]).to_numpy(dtype=float)
    slots = both.index.to_numpy(dtype=np.int64) % _processes(base_row)
    groups = [ratios[slots == slot] for slot in np.unique(slots)]
    rng = np.random.default_rng([rule.seed, cell_seed(pair)])
    ratio, low, high = bootstrap_median(groups, rule.confidence, rule.resamples, rng)
    verdict = rule.decide(low, high, threshold)
    notes = [f"{len(both)} paired rounds in {len(groups)} worker slot(s)"]
    notes += [note for note in [rule.inconclusive(verdict, low, high, threshold),
                                *(busy_note(side, _load(row)) for side, row in
                                  (("baseline", base_row), ("candidate", cand_row)))] if note]
    return CellResult(key, verdict, float(both["base"].median()), float(both["cand"].median()),
                      ratio, low, high, threshold, **counts, **statuses, note="; ".join(notes))


def _processes(row: pd.Series) -> int:
    value = row.get("processes")
    return 1 if missing(value) else max(1, int(value))


def _load(row: pd.Series) -> float | None:
    value = row.get("foreign_load")
    return None if missing(value) else float(value)


def _environment(run: Run, name: str) -> dict[str, Any]:
    return dict(run.about.environments.get(name) or {})


def _commit(run: Run, name: str) -> str | None:
    return ((_environment(run, name).get("fingerprint") or {}).get("git") or {}).get("commit")


def _differences(run: Run, base: str, candidate: str) -> list[str]:
    """How the two environments' fingerprints differ: what the comparison measures."""
    from qkbench.machine.environment import differences

    first, second = (_environment(run, name).get("fingerprint") or {} for name in
                     (base, candidate))
    found = differences(first, second)
    if _environment(run, base).get("variables") != _environment(run, candidate).get("variables"):
        found.append(f"variables: {_environment(run, base).get('variables')} vs "
                     f"{_environment(run, candidate).get('variables')}")
    return found

