"""In the main process, after each round: does what the OS reported, or what the machine check
found, set the round aside for a backend, or was the loss too small to move that backend's
round beyond its own noise?

Each backend is weighed alone: a round a cause touched is set aside for the backends whose
samples it slowed, and kept for those it did not (a one-thread kernel beside a lost vCPU)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping

# The fewest undisturbed samples a backend's own noise is read from. With fewer, a round any
# cause touched is set aside, provisionally: it is judged again once the backend has shown its
# noise (`SamplingResult.provisional_rounds`).
SPREAD_MIN_SAMPLES = 8
# A round is slowed beyond a backend's noise when its median lies above the upper fence of the
# backend's undisturbed samples, Tukey's Q3 + 1.5 IQR: the usual bound for a value that does
# not belong to a sample, read from the backend's own quartiles, so it scales with each cell's
# spread on any machine rather than with a constant measured on one.
SLOW_FENCE_IQR = 1.5

# Causes whose loss is weighed against the backend's own noise before a round is set aside.
# Hypervisor steal comes and goes on a cloud VM in slices of a few ticks spread over its vCPUs:
# on the 2-vCPU Zen 5 VM, rounds set aside for 10-80 ms of it ran only 1.01-1.28x slower than
# the kept ones. Throttling stops every thread of the cgroup at once and a busy neighbour takes
# whole cores: those always set their rounds aside.
NOISE_JUDGED = ("steal",)


def relative_spread(seconds: list[float]) -> float:
    """Half the interquartile range over the median: how far a backend's own samples stray
    from their middle on rounds nothing disturbed. 0 with too few samples to tell."""
    if not noise_known(seconds):
        return 0.0
    low, middle, high = statistics.quantiles(seconds, n=4)
    return (high - low) / (2 * middle) if middle > 0 else 0.0


def noise_known(clean_seconds: list[float]) -> bool:
    """Whether a backend has enough undisturbed samples to read its own noise from."""
    return len(clean_seconds) >= SPREAD_MIN_SAMPLES


def noise_judged(causes: Mapping[str, float], shares: Mapping[str, float] | None) -> bool:
    """Whether every cause named is one whose loss is weighed against the backend's noise
    (and the watch said how much it was); otherwise the causes set the round aside outright."""
    return bool(causes) and shares is not None and all(cause in NOISE_JUDGED
                                                        for cause in causes)


def slowed_beyond_noise(round_seconds: list[float], clean_seconds: list[float]) -> bool:
    """Whether a backend's samples of one round ran slower than its undisturbed samples'
    upper fence. True while the backend's noise is not yet known: a round cannot be cleared
    against a noise no one has read."""
    if not round_seconds:
        return False
    if not noise_known(clean_seconds):
        return True
    low, _, high = statistics.quantiles(clean_seconds, n=4)
    return statistics.median(round_seconds) > high + SLOW_FENCE_IQR * (high - low)


def disturbs(causes: Mapping[str, float], shares: Mapping[str, float] | None,
             round_seconds: list[float], clean_seconds: list[float]) -> bool:
    """Whether the causes the OS reported for a round set it aside for a backend: a cause not
    judged by noise always does (so does any cause, when the watch cannot say how much); steal
    only when its share of the round's capacity exceeds the backend's relative spread and the
    backend's samples of the round ran slower than its own noise allows."""
    if not causes:
        return False
    if not noise_judged(causes, shares):
        return True
    spread = relative_spread(clean_seconds)
    assert shares is not None  # noise_judged says so
    return (any(shares.get(cause, 1.0) > spread for cause in causes)
            and slowed_beyond_noise(round_seconds, clean_seconds))
