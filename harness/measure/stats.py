"""Statistics of raw samples — the median and a distribution-free interval around it.

Timings are skewed (a context switch or a page fault only ever adds time), so the harness
reports the median, and its confidence interval comes from order statistics rather than from a
normal approximation of the samples: the interval [x_(r), x_(n+1−r)] of the sorted samples covers
the true median with probability given by the Binomial(n, 1/2) distribution, whatever the shape
of the timing distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Below this many samples the exact binomial sum is cheap; above it the normal approximation
# of the binomial is accurate to well under one rank.
_EXACT_UP_TO = 200


@dataclass(frozen=True)
class MedianCI:
    median: float
    low: float
    high: float

    @property
    def rel_halfwidth(self) -> float:
        """Half the interval's width relative to the median: the precision the stop rule tests."""
        return (self.high - self.low) / (2.0 * self.median) if self.median > 0 else math.inf


def median(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of no samples")
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks (r, n+1−r) of the order statistics bounding the median, or None if n is too
    small for any interval to reach `confidence` (fewer than 6 samples at 95%)."""
    alpha = 1.0 - confidence
    if n <= _EXACT_UP_TO:
        # Largest r with P(X ≤ r−1) ≤ α/2 for X ~ Binomial(n, 1/2).
        cumulative, r = 0.0, 0
        for j in range(n + 1):
            cumulative += math.comb(n, j) / 2.0**n
            if cumulative > alpha / 2.0:
                break
            r = j + 1
    else:
        z = _normal_quantile(1.0 - alpha / 2.0)
        r = math.floor(n / 2.0 - z * math.sqrt(n) / 2.0)
    if r < 1:
        return None
    return r, n + 1 - r


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> MedianCI | None:
    """The median and its confidence interval, or None when there are too few samples."""
    ranks = median_ci_ranks(len(samples), confidence)
    if ranks is None:
        return None
    ordered = sorted(samples)
    return MedianCI(median(ordered), ordered[ranks[0] - 1], ordered[ranks[1] - 1])


def _normal_quantile(p: float) -> float:
    """Inverse of the standard normal CDF by bisection on math.erf (no SciPy needed)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
