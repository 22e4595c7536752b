"""In the main process, after each round: does what the OS reported, or what the machine check
found, set the round aside for a backend, or was the loss too small to move that backend's
round beyond its own noise?

Each backend is weighed alone: a round steal or the check touched is set aside for the
backends whose samples it slowed, and kept for those it did not (a one-thread kernel beside a
lost vCPU); throttling and other processes' CPU set it aside for every backend that sampled in
it."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Protocol

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


class BackendRounds(Protocol):
    """What the judges read and write of one backend's rounds (`timing.SamplingResult`)."""

    caused_rounds: dict[int, dict[str, float]]
    unfit_rounds: set[int]
    light_rounds: set[int]
    provisional_rounds: set[int]

    @property
    def set_aside_rounds(self) -> set[int]: ...

    def round_seconds(self, round_number: int) -> list[float]: ...

    def clean_seconds(self, judged_round: int | None = None) -> list[float]: ...


def judge_round(result: BackendRounds, round_number: int, causes: Mapping[str, float],
                 shares: Mapping[str, float] | None, checked_unfit: bool) -> None:
    """Set one backend's round aside, or keep it as light, by what the OS reported and what
    the check found. A cause judged by noise (steal), or the check's verdict, sets the round
    aside only for a backend whose samples of it ran beyond its own noise: on the 2-vCPU Zen 5
    VM, rounds set aside for steal alone ran 1.01-1.28x the kept ones, and a check-unfit round
    leaves a one-thread kernel untouched while it slows a two-thread one. Judged before the
    backend's noise is known, such a round is set aside provisionally."""
    if not causes and not checked_unfit:
        return  # the common round: nothing to weigh, and no samples to gather between rounds
    round_seconds = result.round_seconds(round_number)
    clean = result.clean_seconds(judged_round=round_number)
    if causes:
        if not disturbs(causes, shares, round_seconds, clean):
            result.light_rounds.add(round_number)
            return
        result.caused_rounds[round_number] = dict(causes)
        if noise_judged(causes, shares) and not noise_known(clean):
            result.provisional_rounds.add(round_number)
    elif checked_unfit:
        if not slowed_beyond_noise(round_seconds, clean):
            result.light_rounds.add(round_number)
            return
        result.unfit_rounds.add(round_number)
        if not noise_known(clean):
            result.provisional_rounds.add(round_number)


def judge_provisional(result: BackendRounds) -> None:
    """Once a backend has shown its noise, judge again the rounds set aside before: those it
    did not slow beyond that noise are kept. A round a cause not judged by noise touched too
    (a throttle spilled over from the next round) stays aside."""
    if not result.provisional_rounds:
        return
    clean = result.clean_seconds()
    if not noise_known(clean):
        return
    for round_number in sorted(result.provisional_rounds):
        causes = result.caused_rounds.get(round_number, {})
        outright = any(cause not in NOISE_JUDGED for cause in causes)
        aside = round_number in result.set_aside_rounds
        if aside and not outright and not slowed_beyond_noise(
                result.round_seconds(round_number), clean):
            result.caused_rounds.pop(round_number, None)
            result.unfit_rounds.discard(round_number)
            result.light_rounds.add(round_number)
    result.provisional_rounds.clear()
