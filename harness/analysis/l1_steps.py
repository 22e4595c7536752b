"""Steps in a series by an optimal piecewise-constant fit — weighted L1 cost plus a
penalty per step, solved exactly by dynamic programming (the method airspeed velocity
describes for its benchmark histories; written here from that description).

The series (log values, so a step is a ratio) is cut into segments of at least `min_runs`
runs. A segment costs the weighted sum of its runs' absolute distances from its weighted
median; every segment also costs a penalty γ. The cut with the least total cost wins: a step
is worth making only where it saves more than γ. L1 (not squared error) keeps one wild run
from pulling a level, and the weights (a run's own precision, when known) let a run with a
wide interval count for less.

γ = PENALTY × σ × ln(n), with σ the run-to-run scatter estimated from the median of successive
differences (which a step barely moves): the penalty scales with the noise of the series in
hand, so no figure depends on the machine. With PENALTY = 3, simulated series of 30 to 200
runs with mixed (normal and 4x) noise had no step in at least 99.5% of A/A series while 10%
steps were found in more than 90% (benchmarks/step_detection.py, docs/history.md). Steps smaller than `threshold` are then merged away, smallest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PENALTY = 3.0
MAD_TO_SD = 1.4826
#: A floor for σ (in log units: 0.05%) so a series of identical values does not make every
#: rounding difference a step.
MIN_NOISE = 5e-4


def scatter(logs: np.ndarray) -> float:
    """Run-to-run standard deviation of a log series, from successive differences."""
    if len(logs) < 2:
        return MIN_NOISE
    return max(MAD_TO_SD * float(np.median(np.abs(np.diff(logs)))) / math.sqrt(2.0), MIN_NOISE)


def _segment_costs(logs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """cost[i, j]: the weighted L1 cost of the segment logs[i:j] around its best level. The
    best level of an L1 fit is always one of the segment's own values, so the cost is the
    least, over those values, of the running sums of weighted distances to it."""
    n = len(logs)
    distance = weights[:, None] * np.abs(logs[:, None] - logs[None, :])  # [run, candidate]
    cost = np.full((n + 1, n + 1), np.inf)
    for start in range(n):
        running = np.cumsum(distance[start:, start:], axis=0)  # [end - start - 1, candidate]
        inside = np.tril(np.ones((n - start, n - start), dtype=bool))  # candidates in segment
        cost[start, start + 1:] = np.where(inside, running, np.inf).min(axis=1)
    return cost


def fit(logs: np.ndarray, weights: np.ndarray, penalty: float, min_runs: int) -> list[int]:
    """The segment starts (after 0) of the least-cost fit."""
    n = len(logs)
    if n < 2 * min_runs:
        return []
    cost = _segment_costs(logs, weights)
    total = np.full(n + 1, np.inf)
    total[0] = 0.0
    back = np.zeros(n + 1, dtype=int)
    for end in range(min_runs, n + 1):
        starts = np.arange(0, end - min_runs + 1)
        candidates = total[starts] + cost[starts, end] + penalty
        best = int(np.argmin(candidates))
        total[end], back[end] = candidates[best], starts[best]
    cuts, end = [], n
    while end > 0:
        end = int(back[end])
        if end > 0:
            cuts.append(end)
    return sorted(cuts)


def _weighted_median(logs: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(logs)
    cumulative = np.cumsum(weights[order])
    return float(logs[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def find_steps_l1(values: Sequence[float], threshold: float, min_runs: int,
                  weights: Sequence[float] | None = None) -> list[tuple[int, float, float]]:
    """(index of the first run after the step, level before, level after) per step."""
    logs = np.log(np.asarray(values, dtype=float))
    if not np.all(np.isfinite(logs)):
        raise ValueError("find_steps needs positive, finite values")
    w = np.ones(len(logs)) if weights is None else np.asarray(weights, dtype=float)
    w = np.where(np.isfinite(w) & (w > 0), w, np.nan)
    w = np.where(np.isnan(w), np.nanmedian(w) if np.any(np.isfinite(w)) else 1.0, w)
    w = w / w.mean() if len(w) else w
    penalty = PENALTY * scatter(logs) * math.log(max(len(logs), 2))
    bounds = [0, *fit(logs, w, penalty, min_runs), len(logs)]
    levels = [_weighted_median(logs[a:b], w[a:b]) for a, b in zip(bounds, bounds[1:])]
    # Merge steps below the threshold, the smallest first, refitting the merged level.
    needed = math.log1p(threshold)
    while len(levels) > 1:
        gaps = [abs(b - a) for a, b in zip(levels, levels[1:])]
        smallest = int(np.argmin(gaps))
        if gaps[smallest] >= needed:
            break
        del bounds[smallest + 1]
        a, b = bounds[smallest], bounds[smallest + 1]
        levels[smallest:smallest + 2] = [_weighted_median(logs[a:b], w[a:b])]
    return [(bounds[k + 1], math.exp(levels[k]), math.exp(levels[k + 1]))
            for k in range(len(levels) - 1)]
