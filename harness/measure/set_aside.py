"""In the main process, after each round: does a cause the OS reported set the round aside for
a backend, or was the loss too small to move it beyond the backend's own noise?"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

# The fewest undisturbed samples a backend's own spread is read from; with fewer, every cause
# the OS names sets its round aside (the rule before a cell has shown its noise).
SPREAD_MIN_SAMPLES = 8


def relative_spread(seconds: list[float]) -> float:
    """Half the interquartile range over the median: how far a backend's own samples stray
    from their middle on rounds nothing disturbed. 0 with too few samples to tell."""
    if len(seconds) < SPREAD_MIN_SAMPLES:
        return 0.0
    low, middle, high = statistics.quantiles(seconds, n=4)
    return (high - low) / (2 * middle) if middle > 0 else 0.0


# Causes whose loss is weighed against the backend's own noise before a round is set aside.
# Hypervisor steal comes and goes on a cloud VM in slices of a few ticks spread over its vCPUs:
# on the 2-vCPU Zen 5 VM, rounds set aside for 10-80 ms of it ran only 1.01-1.28x slower than
# the kept ones. Throttling stops every thread of the cgroup at once and a busy neighbour takes
# whole cores: those always set their rounds aside.
NOISE_JUDGED = ("steal",)


def disturbs(causes: Mapping[str, float], shares: Mapping[str, float] | None,
             spread: float) -> bool:
    """Whether the causes the OS reported for a round can have moved it beyond the backend's
    own noise (`spread`, its undisturbed samples' relative half-IQR): any cause not judged by
    noise does; a noise-judged one when its share of the round's capacity exceeds the spread.
    A watch that cannot say how much (no `shares`) has every cause set the round aside."""
    if shares is None or any(cause not in NOISE_JUDGED for cause in causes):
        return bool(causes)
    return any(shares.get(cause, 1.0) > spread for cause in causes)
