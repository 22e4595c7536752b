"""Timing — first call, warm-up, block calibration, and sampling until precise.

Two halves, both driven by an injectable clock so they can be tested without sleeping:

* `qkbench.measure.kernel_timer.KernelTimer` runs inside a worker process, next to the backend.
  It times the first call on its own (JIT compilation, CUDA context and library handles land
  there, not in the samples), warms up, and picks how many calls one sample holds.
* `StopRule` and `interleave` run in the main process. They ask each backend of a cell group for
  samples in rounds (A B C A B C ...) so that drift of a shared, noisy machine falls on all
  backends alike, and stop each backend when the confidence interval of its median is tight
  enough, its time budget is spent, or it has enough samples. A machine check between rounds
  (`qkbench.machine.canary`) lets them set aside rounds sampled while the machine had lost part of its
  parallel capacity.

Why blocks of calls: a call of a few microseconds is near the clock's resolution and the cost of
reading it, so one sample times `calls` back-to-back calls and stores their mean. `sync()` runs
inside the timed region, once at the end of the block: an asynchronous backend's queued work is
then inside the time, and per-call syncs would add their own latency to every call. The
device is synced before the block starts too, so earlier work never leaks into the sample.

On a GPU the host clock around `sync()` also times the launch queue and the synchronisation
itself, so a backend that offers a device clock (`Backend.device_clock()`, CUDA events) has each
block timed by events recorded on its stream; the host time is kept beside it in the sample.
The same clock can flush the L2 between calls (a cold cache without input copies, the flush
outside the events) and capture a block as a CUDA graph that each sample replays.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from qkbench.measure.set_aside import judge_provisional, judge_round
from qkbench.measure.stats import MedianCI, median_ci

Clock = Callable[[], float]

# A block never holds more calls than this: with a 1 ms target that is a 1 ns call, far below
# anything a real kernel does; the cap only guards against a backend that does nothing.
MAX_CALLS_PER_SAMPLE = 1_000_000


@dataclass(frozen=True)
class Sample:
    """One timed block: when it started (clock seconds), its mean time per call, its size."""

    round: int
    t_start: float
    seconds: float  # per call, by the primary clock: device events when there are any
    calls: int
    host_seconds: float | None = None  # per call by the host clock, when the primary is another


@dataclass(frozen=True)
class StopRule:
    """When a backend has sampled enough: precise, out of budget, or out of samples."""

    target_rel_ci: float = 0.02  # CI half-width / median
    min_samples: int = 10
    max_samples: int = 10_000
    budget_s: float = 1.0  # timed seconds one backend may spend sampling one cell
    confidence: float = 0.95

    def verdict(self, per_call: list[float], spent_s: float) -> str | None:
        """'converged', 'budget' or 'max_samples' once sampling should stop, else None."""
        if len(per_call) >= self.min_samples:
            ci = median_ci(per_call, self.confidence)
            if ci is not None and ci.rel_halfwidth <= self.target_rel_ci:
                return "converged"
        if len(per_call) >= self.max_samples:
            return "max_samples"
        if spent_s >= self.budget_s:
            return "budget"
        return None


class SamplerFailed(Exception):
    """A backend failed while sampling (its worker crashed, hung or raised)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class SamplingOver(Exception):
    """A backend's sampler may take no more samples (its cell is close to its hard time
    limit): it stops with `stopped_by` set to the reason, and its samples count."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# A backend left with fewer samples than this from rounds kept has its figures computed from all
# of its samples instead (and says so in `unfit_share` and its reason).
MIN_FIT_SAMPLES = 3
# While rounds are set aside, or while a backend has fewer than `min_samples` kept samples, it
# may sample for up to this many times its budget (the runner keeps that well inside the
# cell's timeout), so that a few seconds of an unfit machine are waited out rather than
# measured, and a slow cell gets its samples.
UNFIT_BUDGET_FACTOR = 3.0
# The machine check gives up on a group when it would set aside more than this share of its
# rounds with no cause the OS reports: a check that calls most of a machine's time unfit
# describes the check, not the machine, and the data are kept instead.
JUDGE_SHARE = 0.5
# ... once the group has had this many rounds (a share of two rounds says nothing).
JUDGE_AFTER_ROUNDS = 6
# The check stops being asked in a group once it has taken more than this share of the time
# the rounds it guards took: on a loaded machine its threaded probe slows far more than the
# samples do (measured on the 2-vCPU VM at load 9: the check took 30-90 s of a 120-200 s quick
# run), and a guard that doubles a run costs more than the rounds it could set aside.
CHECK_COST_SHARE = 0.5
# Below that, rounds lengthen so that the check costs about this share of the sampling it
# guards: its cost per round is measured as the run goes (a reading, and a message to each
# worker that sampled), so a slow machine or a group of many backends gets longer rounds, not a
# check that eats the run (measured on the 2-vCPU Zen 3 VM: 12-18 ms a round for four backends,
# beside 80 ms rounds, 13 s of a 170 s default run).
CHECK_TARGET_SHARE = 0.05
# ... but a backend's budget always spans at least this many rounds, so that the machine's
# drift still falls on every backend of the group alike.
MIN_ROUNDS_PER_BUDGET = 8


class RoundWatch(Protocol):
    """What the OS reports about a round (`qkbench.machine.os_causes.RoundCauses`)."""

    def start(self) -> None: ...

    def stop(self) -> dict[str, float]: ...

    # Optional: each cause's loss as a share of the round's capacity (`last_shares` of
    # RoundCauses), without which every cause it names sets the round aside; and what it
    # traced back into earlier rounds (`earlier_rounds`: {rounds back: {cause: seconds}}).


@dataclass
class SamplingResult:
    samples: list[Sample] = field(default_factory=list)
    stopped_by: str = ""  # the StopRule verdict, or "failed"
    failure: SamplerFailed | None = None
    unfit_rounds: set[int] = field(default_factory=set)  # rounds the machine check set aside
    # Rounds set aside for a cause the OS reported: round → {cause: seconds lost}.
    caused_rounds: dict[int, dict[str, float]] = field(default_factory=dict)
    # Rounds the OS named a cause for, or the check found unfit, that did not move this
    # backend's samples beyond its own noise: kept.
    light_rounds: set[int] = field(default_factory=set)
    # Rounds set aside before the backend had shown its noise (steal, the check): judged
    # again once it has (`set_aside.judge_provisional`).
    provisional_rounds: set[int] = field(default_factory=set)
    # Set when the machine check gave up on this group (see JUDGE_SHARE): why, in words.
    check_gave_up: str = ""
    min_samples: int = 0  # the rule's, so a row can say when it has fewer

    @property
    def converged(self) -> bool:
        return self.stopped_by == "converged"

    @property
    def set_aside_rounds(self) -> set[int]:
        return self.unfit_rounds | set(self.caused_rounds)

    def clean_seconds(self, judged_round: int | None = None) -> list[float]:
        """Per-call times of the rounds nothing was reported or checked for (leaving out
        `judged_round`, the one being judged): the backend's own noise, which a round must
        exceed to be set aside."""
        touched = self.set_aside_rounds | self.light_rounds | {judged_round}
        return [s.seconds for s in self.samples if s.round not in touched]

    def round_seconds(self, round_number: int) -> list[float]:
        return [s.seconds for s in self.samples if s.round == round_number]

    def set_aside_ratio(self) -> float | None:
        """The median of the samples set aside over the median of the kept ones: how much
        slower what the rule took out ran (its precision), or None when nothing or all was."""
        aside = self.set_aside_rounds
        out = [s.seconds for s in self.samples if s.round in aside]
        kept = [s.seconds for s in self.samples if s.round not in aside]
        if not out or not kept or statistics.median(kept) <= 0:
            return None
        return statistics.median(out) / statistics.median(kept)

    def fit_samples(self) -> list[Sample]:
        aside = self.set_aside_rounds
        return [s for s in self.samples if s.round not in aside]

    @property
    def measured(self) -> list[Sample]:
        """The samples the cell's figures come from: those of the rounds kept, or every
        sample when too few of those are left."""
        fit = self.fit_samples()
        return fit if len(fit) >= MIN_FIT_SAMPLES else self.samples

    @property
    def unfit_share(self) -> float:
        """The share of samples taken in rounds set aside (by the check or an OS cause)."""
        if not self.samples:
            return 0.0
        return 1.0 - len(self.fit_samples()) / len(self.samples)

    def ci(self, confidence: float = 0.95) -> MedianCI | None:
        return median_ci([s.seconds for s in self.measured], confidence)

    def unconverged_reason(self) -> str:
        """Why the figures rest on fewer kept samples than the rule asks for, or ''."""
        kept = len(self.fit_samples())
        if not self.samples or kept >= self.min_samples:
            return ""
        why = f"unconverged: {kept} kept sample(s), fewer than min_samples {self.min_samples}"
        aside = len(self.samples) - kept
        if aside:
            why += f" ({aside} set aside)"
        if kept < MIN_FIT_SAMPLES:
            why += "; figures from all samples, set-aside rounds included"
        return why + f"; stopped by {self.stopped_by or 'budget'}"

    def median(self) -> float | None:
        """The cell's time per call: the interval's median, or the middle sample when too few
        samples give an interval; None without samples."""
        ci = self.ci()
        if ci is not None:
            return ci.median
        per_call = sorted(s.seconds for s in self.measured)
        return per_call[len(per_call) // 2] if per_call else None


# A sampler takes (how many samples, round number) and returns that many samples.
Sampler = Callable[[int, int], list[Sample]]


def _block_estimate(result: SamplingResult, calibrated_s: float) -> float:
    """How long one of the backend's blocks lasts: the median of those it took, once it has
    taken some. The calibration figure alone is one block timed during warm-up; a hiccup
    there would otherwise make the backend take a fraction of its share of every round and
    spend its budget over many more rounds than the others."""
    if not result.samples:
        return calibrated_s
    blocks = sorted(s.seconds * s.calls for s in result.samples[-32:])
    return blocks[len(blocks) // 2]


def _timed_s(samples: list[Sample]) -> float:
    return sum(s.seconds * s.calls for s in samples)


def interleave(samplers: Mapping[str, Sampler], block_seconds: Mapping[str, float],
               rule: StopRule, round_s: float = 0.02, min_rounds: int = 1,
               machine_fit: Callable[[int | None], bool] | None = None,
               unfit_budget_factor: float = UNFIT_BUDGET_FACTOR,
               round_watch: RoundWatch | None = None,
               cost_clock: Callable[[], float] | None = None,
               order: Callable[[list[str]], list[str]] | None = None
               ) -> dict[str, SamplingResult]:
    """Sample every backend of a group in rounds, in lockstep, until all of them may stop.

    In each round every backend still sampling takes enough samples to fill about `round_s`
    (at least one), so short kernels do not pay a message round-trip per sample, while each
    round stays short enough that drift is shared.

    Lockstep: a backend whose median is already precise keeps its turn in every round while
    another backend of the group still needs samples. Otherwise a backend that converges in
    two rounds is measured over a tenth of a second and one that needs twenty rounds over
    two seconds, and the ratio of their medians compares two different stretches of the
    machine's drift — the very thing interleaving is there to cancel. Only the hard limits,
    a backend's own `budget_s` and `max_samples`, end its turns early (`round_s` spends every
    backend's budget at about the same pace, so those also end together). `stopped_by` keeps
    the first verdict a backend reached. A backend that fails is recorded and the others go on.

    The group samples for at least `min_rounds` rounds: the runner spreads rounds over several
    worker processes per backend, and each one must get a turn. Rounds are then kept short
    enough that `min_rounds` of them fit in the budget, and the budget ends a backend's turns
    only once it has had `min_rounds` (a call slower than the budget still gets one per round).

    `round_watch`, when given, reads what the OS reports over each round (throttling, steal):
    a round it names throttling or a busy neighbour for is set aside for every backend that
    sampled in it, with the cause; a round of steal alone only for the backends whose samples
    of it ran beyond their own noise (`qkbench.measure.set_aside`).
    `machine_fit`, when given, is asked before the first round (with None) and after every
    round (with that round's number, so it can also ask the processes that sampled it). A round
    with an unfit answer on both sides (a stretch that covered the round) is set aside for each
    backend its samples show it slowed beyond that backend's noise; its samples are kept,
    flagged, and left out of the stopping rule and the figures. An unfit answer on one side
    only is a stretch that began or ended inside the round, or a blip at the reading itself;
    measured on the 2-vCPU Zen 5 VM such rounds ran a median 1.05x the kept ones (both sides:
    1.32x), within a multi-threaded cell's own noise, so they are kept
    (docs/measurement-evidence.md). Rounds judged before a backend has shown its noise are set
    aside provisionally and judged again once it has (`SamplingResult.provisional_rounds`).
    When the check would set aside more than `JUDGE_SHARE` of the rounds with no OS cause, it
    gives up on the group: its rounds are kept and `check_gave_up` says so. With `cost_clock`,
    the check also stops being asked once it has cost more than `CHECK_COST_SHARE` of the rounds'
    time (the rounds it set aside until then stay aside; `check_gave_up` says so); below
    that, rounds lengthen until the check costs about `CHECK_TARGET_SHARE` of them.

    `order`, when given, sets the backends' order within each round (it gets the list of
    those still sampling and returns them reordered): the runner shuffles it when a group
    spans environments. Without it, every round runs them in the order of `samplers`.

    The budget counts only the rounds kept; while rounds are set aside, or a backend has fewer
    kept samples than `min_samples`, it samples on up to `unfit_budget_factor` times the budget
    in all, and a row with fewer says why (`SamplingResult.unconverged_reason`).
    """
    results = {name: SamplingResult(min_samples=rule.min_samples) for name in samplers}
    active = list(samplers)
    round_number = 0
    round_s = min(round_s, rule.budget_s / max(min_rounds, 1))
    longest_round_s = max(round_s, rule.budget_s / max(min_rounds, MIN_ROUNDS_PER_BUDGET))
    fit_before = machine_fit(None) if machine_fit else True
    check_rounds: set[int] = set()  # set aside by the check alone
    judging = machine_fit is not None
    check_s = rounds_s = 0.0  # what the check cost, beside the rounds it guards
    sampled_in: dict[int, list[str]] = {}  # the backends that sampled each round
    while active and (round_number < min_rounds
                      or any(not results[name].stopped_by for name in active)):
        sampled = []
        round_began = cost_clock() if cost_clock else 0.0
        if round_watch is not None:
            round_watch.start()
        for name in order(list(active)) if order else list(active):
            result = results[name]
            per_round = max(1, int(round_s / max(_block_estimate(result, block_seconds[name]),
                                                 1e-9)))
            per_round = min(per_round, rule.max_samples - len(result.samples))
            try:
                result.samples.extend(samplers[name](per_round, round_number))
            except SamplerFailed as failure:
                result.stopped_by, result.failure = "failed", failure
                active.remove(name)
                continue
            except SamplingOver as over:
                result.stopped_by = result.stopped_by or over.reason
                active.remove(name)
                continue
            sampled.append(name)
        causes = round_watch.stop() if round_watch is not None else {}
        sampled_in[round_number] = sampled
        # A throttle read in this round's readings that covered rounds before it: those too
        # (the largest share traced: two readings can trace the same throttle).
        for back, spilled in getattr(round_watch, "earlier_rounds", {}).items():
            for name in sampled_in.get(round_number - back, []):
                aside = results[name].caused_rounds.setdefault(round_number - back, {})
                for cause, seconds in spilled.items():
                    aside[cause] = max(aside.get(cause, 0.0), seconds)
                results[name].light_rounds.discard(round_number - back)
        shares = getattr(round_watch, "last_shares", None) if causes else None
        checked_at = cost_clock() if cost_clock else 0.0
        fit_after = machine_fit(round_number) if judging and machine_fit else True
        if cost_clock and judging:
            check_s += cost_clock() - checked_at
            rounds_s += checked_at - round_began
            round_s = _round_for_check(round_s, longest_round_s, check_s / (round_number + 1),
                                       len(sampled))
            if (round_number + 1 >= JUDGE_AFTER_ROUNDS and check_s > CHECK_COST_SHARE * rounds_s):
                judging = False
                why = (f"stopped after round {round_number}: the check took {check_s:.2f} s "
                       f"beside {rounds_s:.2f} s of sampling; later rounds all kept")
                for result in results.values():
                    result.check_gave_up = why
        if not causes and not fit_before and not fit_after:
            check_rounds.add(round_number)
        if judging and len(check_rounds) > JUDGE_SHARE * max(round_number + 1,
                                                             JUDGE_AFTER_ROUNDS):
            judging = _give_up(results, check_rounds, round_number + 1)
        for name in sampled:
            result = results[name]
            judge_round(result, round_number, causes, shares,
                         judging and round_number in check_rounds)
            judge_provisional(result)
            kept = result.fit_samples()
            spent = _timed_s(kept)
            verdict = rule.verdict([s.seconds for s in kept], spent)
            capped = _timed_s(result.samples) >= unfit_budget_factor * rule.budget_s
            short = len(kept) < rule.min_samples and not capped
            if verdict == "budget" and short:
                verdict = None  # too few kept samples: sample on, up to the cap
            out_of_time = spent >= rule.budget_s and not short or capped
            if out_of_time and round_number + 1 < min_rounds:
                out_of_time = False
            elif out_of_time and not verdict:
                verdict = "budget"  # the time allowed for setting rounds aside ran out
            if verdict and not result.stopped_by:
                result.stopped_by = verdict
            if out_of_time or len(result.samples) >= rule.max_samples:
                active.remove(name)  # a hard limit, whatever the verdict
        fit_before = fit_after
        round_number += 1
    if judging and check_rounds and len(check_rounds) > JUDGE_SHARE * round_number:
        _give_up(results, check_rounds, round_number)
    return results


def _round_for_check(round_s: float, longest_s: float, check_per_round_s: float,
                     backends: int) -> float:
    """Each backend's share of a round, long enough that the check around the round costs
    about `CHECK_TARGET_SHARE` of it, never shorter than it is nor longer than `longest_s`."""
    needed = check_per_round_s / (CHECK_TARGET_SHARE * max(backends, 1))
    return min(max(round_s, needed), longest_s)


def _give_up(results: Mapping[str, SamplingResult], check_rounds: set[int], rounds: int
             ) -> bool:
    """The check cannot judge this machine: keep its rounds, say so in every result."""
    why = (f"cannot judge this machine: the check would set aside {len(check_rounds)} of "
           f"{rounds} rounds with no cause the OS reports; all kept")
    for result in results.values():
        result.unfit_rounds.clear()
        result.check_gave_up = why
    return False
