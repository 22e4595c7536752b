"""The statistics of a verdict: a seeded percentile bootstrap of the ratio of two
medians (or of the median of paired ratios), resampling runs (or worker processes) first, then
samples, and, when a side pools several runs, a t interval from how much the runs' own medians
differ (see analysis/compare.py for why)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
from qkbench.cell_key import CellKey
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0


def bootstrap_ratio(baseline: np.ndarray | Sequence[np.ndarray],
                    candidate: np.ndarray | Sequence[np.ndarray], confidence: float = CONFIDENCE,
                    resamples: int = RESAMPLES, rng: np.random.Generator | None = None
                    ) -> tuple[float, float, float]:
    """(ratio of medians candidate/baseline, interval low, interval high): percentile bootstrap,
    each side resampled on its own.

    A side is one array of samples, or a list of arrays, one per run. Several runs are
    resampled in two stages — the runs with replacement, then each drawn run's samples — so
    that how much whole runs differ from one another (which no single run can show) widens
    the interval as it should."""
    rng = rng if rng is not None else np.random.default_rng(SEED)
    base_runs, cand_runs = _as_runs(baseline), _as_runs(candidate)
    ratio = float(np.median(np.concatenate(cand_runs)) / np.median(np.concatenate(base_runs)))
    ratios = (_bootstrap_medians(cand_runs, resamples, rng)
              / _bootstrap_medians(base_runs, resamples, rng))
    alpha = 1.0 - confidence
    low, high = np.quantile(ratios, [alpha / 2.0, 1.0 - alpha / 2.0])
    return ratio, float(low), float(high)


def bootstrap_median(groups: Sequence[np.ndarray], confidence: float = CONFIDENCE,
                     resamples: int = RESAMPLES, rng: np.random.Generator | None = None
                     ) -> tuple[float, float, float]:
    """(median, interval low, interval high) of values that come in independent groups (a
    paired comparison's per-round ratios, one array per worker slot): the same two-stage
    percentile bootstrap as `bootstrap_ratio` — the groups with replacement, then each drawn
    group's values — so groups that disagree widen the interval."""
    rng = rng if rng is not None else np.random.default_rng(SEED)
    parts = _as_runs(groups)
    medians = _bootstrap_medians(parts, resamples, rng)
    alpha = 1.0 - confidence
    low, high = np.quantile(medians, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(np.median(np.concatenate(parts))), float(low), float(high)


def _as_runs(values: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return [values.astype(float)]
    return [np.asarray(v, dtype=float) for v in values]


def _bootstrap_medians(runs: list[np.ndarray], resamples: int, rng: np.random.Generator
                       ) -> np.ndarray:
    """Medians of `resamples` two-stage resamples, as weighted medians of the sorted samples:
    a sample's weight is how often the resample drew it (so no resample is materialised)."""
    values = np.concatenate(runs)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    out = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(values))  # bounds memory: chunk × samples weights at once
    for start in range(0, resamples, chunk):
        count = min(resamples, start + chunk) - start
        drawn = rng.multinomial(len(runs), np.full(len(runs), 1.0 / len(runs)), size=count)
        parts = []
        for i, run in enumerate(runs):
            # A run drawn k times by a resample contributes k × len(run) draws of its samples.
            size = len(run)
            replicate = np.repeat(np.arange(count), drawn[:, i] * size)
            picks = rng.integers(0, size, size=len(replicate))
            parts.append(np.bincount(replicate * size + picks,
                                     minlength=count * size).reshape(count, size))
        weights = np.concatenate(parts, axis=1)[:, order]
        cumulative = np.cumsum(weights, axis=1)
        half = cumulative[:, -1:] / 2.0
        low = np.argmax(cumulative >= half, axis=1)  # the middle one, or the lower of two
        high = np.argmax(cumulative > half, axis=1)  # the upper of two (same when odd)
        out[start:start + count] = 0.5 * (ordered[low] + ordered[high])
    return out


def between_runs_interval(baseline: Sequence[float], candidate: Sequence[float],
                          confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The interval of the ratio candidate/baseline from the runs' own medians, one per run:
    a Welch t interval of the difference of their mean logarithms. None unless a side has
    two runs or more.

    Two runs of one commit differ as wholes (on a shared VM a multi-threaded cell's median
    moved by up to 1.7x between six runs of one sitting), and the runs of a side are then its
    only independent units: the bootstrap's resamples of three runs cannot show a spread that
    three values estimate so poorly, while the t quantile at so few degrees of freedom does.
    A side with one run is taken to spread as much as the other side's runs (equal variances,
    the other side's degrees of freedom)."""
    logs = [np.log(np.asarray(side, dtype=float)) for side in (baseline, candidate)]
    counts = [len(side) for side in logs]
    if max(counts) < 2:
        return None
    if min(counts) < 2:  # one side's spread stands for both
        variance = float(np.var(logs[counts.index(max(counts))], ddof=1))
        parts = [variance / k for k in counts]
        freedom = float(max(counts) - 1)
    else:
        parts = [float(np.var(side, ddof=1)) / len(side) for side in logs]
        freedom = float(min(counts) - 1)
        if sum(parts) > 0:  # Welch-Satterthwaite
            freedom = sum(parts) ** 2 / sum(p * p / (k - 1) for p, k in zip(parts, counts))
    spread = math.sqrt(sum(parts))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, freedom)) * spread
    difference = float(np.mean(logs[1]) - np.mean(logs[0]))
    return math.exp(difference - half), math.exp(difference + half)


def cell_seed(cell: CellKey) -> int:
    """The seed of a cell's resamples, from its key's values: a cell gets the same resamples in
    every comparison. The environment counts only where a run has one, so the seeds (and
    verdicts) of runs without environments are those they had before that axis existed."""
    values = cell.as_dict()
    if values["environment"] is None:
        del values["environment"]
    return zlib.crc32(repr(tuple(values.values())).encode())
