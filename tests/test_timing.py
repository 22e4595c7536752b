"""Timing logic with a fake clock: no sleeping, no real kernel, fully deterministic."""

import random

import pytest

from qkbench.measure.kernel_timer import KernelTimer
from qkbench.measure.timing import (
    JUDGE_AFTER_ROUNDS,
    Sample,
    SamplerFailed,
    StopRule,
    interleave,
)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeKernel:
    """A kernel whose calls advance the fake clock; the first call pays a 'compilation'."""

    def __init__(self, clock, seconds, compile_s=0.0, async_s=0.0):
        self.clock, self.seconds, self.compile_s, self.async_s = clock, seconds, compile_s, async_s
        self.calls, self.pending, self.events, self.args = 0, 0.0, [], []

    def call(self, q=None, k=None):
        self.calls += 1
        self.args.append((q, k))
        self.events.append("call")
        self.clock.now += self.seconds + (self.compile_s if self.calls == 1 else 0.0)
        self.pending += self.async_s  # work queued on a 'device', paid at sync
        return "result"

    def sync(self):
        self.events.append("sync")
        self.clock.now += self.pending
        self.pending = 0.0


def test_first_call_is_timed_alone_and_includes_compilation():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=0.01, compile_s=2.0)
    timer = KernelTimer(kernel.call, [(1, 2)], kernel.sync, clock)
    result, first = timer.first_call()
    assert result == "result"
    assert first == pytest.approx(2.01)
    _, elapsed = timer.time_block(1)
    assert elapsed == pytest.approx(0.01)


def test_queued_device_work_is_inside_the_timed_region():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=1e-6, async_s=0.005)  # launch is cheap, work is not
    timer = KernelTimer(kernel.call, [(1, 2)], kernel.sync, clock)
    _, elapsed = timer.time_block(4)
    assert elapsed == pytest.approx(4 * (1e-6 + 0.005))
    # synced before the block (earlier work stays out) and after it (this work stays in)
    assert kernel.events == ["sync", "call", "call", "call", "call", "sync"]


def test_short_calls_are_timed_in_blocks_long_calls_alone():
    clock = FakeClock()
    short = KernelTimer(*_kernel(clock, 3e-6), clock=clock)
    calls, block_s = short.calibrate(min_sample_s=1e-3, warmup_s=0.0)
    assert calls == 512  # smallest power of two with 512 × 3 µs ≥ 1 ms
    assert block_s == pytest.approx(512 * 3e-6)
    long = KernelTimer(*_kernel(clock, 0.2), clock=clock)
    assert long.calibrate(min_sample_s=1e-3, warmup_s=0.0)[0] == 1


def test_warmup_runs_for_at_least_the_warmup_time():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=0.01)
    KernelTimer(kernel.call, [(1, 2)], kernel.sync, clock).calibrate(min_sample_s=1e-3, warmup_s=0.1)
    assert kernel.calls == 10


def test_samples_store_per_call_time_and_block_size():
    clock = FakeClock()
    timer = KernelTimer(*_kernel(clock, 2e-6), clock=clock)
    samples = timer.samples(count=3, calls=100, round_number=7)
    assert [s.calls for s in samples] == [100, 100, 100]
    assert all(s.seconds == pytest.approx(2e-6) and s.round == 7 for s in samples)
    assert samples[1].t_start == pytest.approx(samples[0].t_start + 100 * 2e-6)


def _kernel(clock, seconds):
    kernel = FakeKernel(clock, seconds)
    return kernel.call, [("q", "k")], kernel.sync


def test_cold_cache_blocks_rotate_through_input_copies():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=0.001)
    sets = [("q0", "k0"), ("q1", "k1"), ("q2", "k2")]
    timer = KernelTimer(kernel.call, sets, kernel.sync, clock)
    timer.time_block(7)
    assert kernel.args == sets * 2 + sets[:1]
    KernelTimer(kernel.call, sets, kernel.sync, clock).first_call()
    assert kernel.args[-1] == ("q0", "k0")


# ---------------------------------------------------------------- stopping rule


def test_stop_rule_converges_on_tight_samples_after_min_samples():
    rule = StopRule(target_rel_ci=0.02, min_samples=10, budget_s=100.0)
    tight = [1.0 + 0.001 * (i % 3) for i in range(9)]
    assert rule.verdict(tight, spent_s=1.0) is None  # precise, but fewer than min_samples
    assert rule.verdict(tight + [1.0], spent_s=1.0) == "converged"


def test_stop_rule_stops_noisy_samples_on_budget_and_says_so():
    rule = StopRule(target_rel_ci=0.02, min_samples=10, budget_s=1.0)
    noisy = [1.0, 2.0] * 10
    assert rule.verdict(noisy, spent_s=0.5) is None
    assert rule.verdict(noisy, spent_s=1.0) == "budget"


def test_stop_rule_max_samples():
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, max_samples=20, budget_s=1e9)
    assert rule.verdict([1.0, 2.0] * 10, spent_s=0.0) == "max_samples"


class ScriptedSampler:
    """Returns samples from a cycle of per-call times, advancing a shared fake clock."""

    def __init__(self, name, log, clock, times, fail_at_round=None):
        self.name, self.log, self.clock, self.times = name, log, clock, times
        self.fail_at_round, self.i = fail_at_round, 0

    def __call__(self, count, round_number):
        if round_number == self.fail_at_round:
            raise SamplerFailed("crashed", "worker process killed by SIGSEGV")
        out = []
        for _ in range(count):
            seconds = self.times[self.i % len(self.times)]
            self.i += 1
            self.log.append((self.name, round_number))
            out.append(Sample(round_number, self.clock.now, seconds, 1))
            self.clock.now += seconds
        return out


def test_backends_are_sampled_in_interleaved_rounds():
    clock, log = FakeClock(), []
    samplers = {name: ScriptedSampler(name, log, clock, [0.01]) for name in "ABC"}
    rule = StopRule(target_rel_ci=0.5, min_samples=6, budget_s=10.0)
    results = interleave(samplers, {n: 0.01 for n in "ABC"}, rule, round_s=0.0)
    assert log[:6] == [("A", 0), ("B", 0), ("C", 0), ("A", 1), ("B", 1), ("C", 1)]
    assert all(r.converged and len(r.samples) == 6 for r in results.values())


def test_short_blocks_take_several_samples_per_round():
    clock, log = FakeClock(), []
    samplers = {"fast": ScriptedSampler("fast", log, clock, [0.001])}
    rule = StopRule(target_rel_ci=0.5, min_samples=6, budget_s=10.0)
    interleave(samplers, {"fast": 0.001}, rule, round_s=0.02)
    assert [r for _, r in log].count(0) == 20


def test_one_failing_backend_does_not_stop_the_others():
    clock, log = FakeClock(), []
    samplers = {"ok": ScriptedSampler("ok", log, clock, [0.01]),
                "bad": ScriptedSampler("bad", log, clock, [0.01], fail_at_round=2)}
    rule = StopRule(target_rel_ci=0.5, min_samples=10, budget_s=10.0)
    results = interleave(samplers, {"ok": 0.01, "bad": 0.01}, rule, round_s=0.0)
    assert results["ok"].converged and len(results["ok"].samples) == 10
    assert results["bad"].stopped_by == "failed"
    assert results["bad"].failure.status == "crashed"
    assert len(results["bad"].samples) == 2  # what it measured before failing is still known


def test_noisy_backend_stops_on_its_budget_while_a_quiet_one_converges():
    # Lockstep: both backends' samples must also span the same rounds (the same stretch of
    # drift), though the quiet one was precise long before the noisy one ran out of budget.
    clock, log = FakeClock(), []
    samplers = {"quiet": ScriptedSampler("quiet", log, clock, [0.1]),
                "noisy": ScriptedSampler("noisy", log, clock, [0.05, 0.15, 0.1, 0.3])}
    rule = StopRule(target_rel_ci=0.02, min_samples=10, budget_s=2.0)
    results = interleave(samplers, {"quiet": 0.1, "noisy": 0.1}, rule, round_s=0.0)
    assert results["quiet"].stopped_by == "converged"
    assert results["noisy"].stopped_by == "budget"
    spent = sum(s.seconds for s in results["noisy"].samples)
    assert 2.0 <= spent < 2.0 + 0.3
    quiet_rounds = {s.round for s in results["quiet"].samples}
    noisy_rounds = {s.round for s in results["noisy"].samples}
    assert len(noisy_rounds) > 10  # the noisy one needed more rounds than quiet's first verdict
    assert quiet_rounds == noisy_rounds


def test_the_group_stops_once_every_backend_has_converged():
    clock, log = FakeClock(), []
    samplers = {name: ScriptedSampler(name, log, clock, [0.01]) for name in "AB"}
    rule = StopRule(target_rel_ci=0.5, min_samples=6, budget_s=10.0)
    results = interleave(samplers, {"A": 0.01, "B": 0.01}, rule, round_s=0.0)
    assert [len(r.samples) for r in results.values()] == [6, 6]


def test_a_converged_backend_still_stops_at_its_own_budget():
    clock, log = FakeClock(), []
    # "heavy" claims short blocks, so it takes 20 samples a round and spends 2 s in round 0.
    samplers = {"heavy": ScriptedSampler("heavy", log, clock, [0.1]),
                "noisy": ScriptedSampler("noisy", log, clock, [0.05, 0.15, 0.1, 0.3])}
    rule = StopRule(target_rel_ci=0.02, min_samples=10, budget_s=2.0)
    results = interleave(samplers, {"heavy": 0.001, "noisy": 0.1}, rule, round_s=0.02)
    assert results["heavy"].stopped_by == "converged"
    assert len(results["heavy"].samples) == 20
    assert max(s.round for s in results["noisy"].samples) > 0


def test_round_shares_follow_the_blocks_actually_measured():
    # Calibration saw a 10x hiccup (0.01 s blocks); the real blocks last 0.001 s. From round 1
    # on, the backend must fill its 0.02 s share with 20 samples, not 2.
    clock, log = FakeClock(), []
    samplers = {"fast": ScriptedSampler("fast", log, clock, [0.001])}
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, max_samples=100, budget_s=10.0)
    interleave(samplers, {"fast": 0.01}, rule, round_s=0.02)
    rounds = [r for _, r in log]
    assert rounds.count(0) == 2
    assert rounds.count(1) == 20


def test_every_process_gets_a_turn_even_on_a_small_budget():
    # Three worker processes per backend: rounds 0, 1 and 2 must all be sampled, though a
    # single 20 ms round would already spend this 0.03 s budget.
    clock, log = FakeClock(), []
    samplers = {name: ScriptedSampler(name, log, clock, [0.004, 0.006]) for name in "AB"}
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=0.03)
    results = interleave(samplers, {"A": 0.005, "B": 0.005}, rule, round_s=0.02, min_rounds=3)
    for result in results.values():
        assert {0, 1, 2} <= {s.round for s in result.samples}
        assert result.stopped_by == "budget"
        # Shorter rounds, not a longer budget: at most one block past it.
        assert sum(s.seconds for s in result.samples) <= 0.03 + 0.006


def test_a_call_slower_than_the_budget_still_samples_once_per_process():
    clock, log = FakeClock(), []
    samplers = {"slow": ScriptedSampler("slow", log, clock, [0.5])}
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=0.1)
    results = interleave(samplers, {"slow": 0.5}, rule, round_s=0.02, min_rounds=3)
    assert [s.round for s in results["slow"].samples] == [0, 1, 2]


class SlowInRounds(ScriptedSampler):
    """Takes `seconds` per call, `slowdown` times that in the rounds listed in `slow`."""

    def __init__(self, name, log, clock, seconds, slow, slowdown=3.0):
        super().__init__(name, log, clock, [seconds])
        self.slow, self.slowdown = slow, slowdown

    def __call__(self, count, round_number):
        samples = super().__call__(count, round_number)
        if round_number in self.slow:
            return [Sample(s.round, s.t_start, s.seconds * self.slowdown, s.calls)
                    for s in samples]
        return samples


class ScriptedCheck:
    """A machine check that answers from a script (True = fit), then True for ever."""

    def __init__(self, answers):
        self.answers, self.calls, self.rounds = list(answers), 0, []

    def __call__(self, round_number):
        self.calls += 1
        self.rounds.append(round_number)
        return self.answers.pop(0) if self.answers else True


def test_rounds_unfit_checks_bracket_on_both_sides_are_set_aside_for_every_backend():
    # Checks: before round 0, then after rounds 0, 1, 2, ... Unfit after rounds 0, 1 and 2:
    # rounds 1 and 2, in which both backends ran 3x slower, have an unfit answer on both sides;
    # rounds 0 and 3 on one side only (the stretch began or ended inside them), and are kept.
    clock, log = FakeClock(), []
    samplers = {"A": SlowInRounds("A", log, clock, 0.01, slow={1, 2}),
                "B": SlowInRounds("B", log, clock, 0.02, slow={1, 2})}
    check = ScriptedCheck([True, False, False, False])
    rule = StopRule(target_rel_ci=0.01, min_samples=6, budget_s=10.0)
    results = interleave(samplers, {"A": 0.01, "B": 0.02}, rule, round_s=0.0,
                         machine_fit=check)
    for name, seconds in (("A", 0.01), ("B", 0.02)):
        result = results[name]
        assert result.unfit_rounds == {1, 2}
        assert result.converged
        assert {s.round for s in result.samples} >= {1, 2}  # kept, not thrown away
        assert [s.seconds for s in result.measured] == [seconds] * len(result.measured)
        assert len(result.measured) == 6  # the stop rule counted only the rounds kept
        assert result.ci().median == pytest.approx(seconds)
        assert result.unfit_share == pytest.approx(2 / 8)
    assert check.rounds == [None, *range(8)]  # before the first round, then after each


def test_a_single_unfit_answer_sets_no_round_aside():
    # One unfit answer, after round 2: a blip at the reading, or a stretch that touched rounds
    # 2 and 3 only at their ends. Neither round is unfit on both sides.
    clock, log = FakeClock(), []
    samplers = {"A": ScriptedSampler("A", log, clock, [0.1])}
    check = ScriptedCheck([True, True, True, False])
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=1.0)
    result = interleave(samplers, {"A": 0.1}, rule, round_s=0.0, machine_fit=check)["A"]
    assert result.unfit_rounds == set() and result.unfit_share == 0.0
    assert check.calls > 4  # it was asked after the unfit answer too


def test_without_a_machine_check_every_round_counts():
    clock, log = FakeClock(), []
    samplers = {"A": SlowInRounds("A", log, clock, 0.01, slow={1, 2})}
    rule = StopRule(target_rel_ci=0.01, min_samples=6, budget_s=10.0)
    result = interleave(samplers, {"A": 0.01}, rule, round_s=0.0)["A"]
    assert result.unfit_rounds == set() and result.unfit_share == 0.0
    assert len(result.measured) == len(result.samples)


class ScriptedWatch:
    """Stands in for the OS readings: the causes it reports for each round, from a script."""

    def __init__(self, causes):
        self.causes, self.round, self.started = list(causes), 0, False

    def start(self):
        assert not self.started, "a round's reading began twice"
        self.started = True

    def stop(self):
        assert self.started, "a round's reading ended before it began"
        self.started = False
        found = self.causes[self.round] if self.round < len(self.causes) else {}
        self.round += 1
        return found


def test_set_aside_rounds_are_waited_out_only_up_to_the_grace():
    # The OS reports throttling in every round: the backend samples past its budget (the
    # rounds set aside do not count), stops at 3x the budget, and its figures then come from
    # every sample, for too few were kept; its reason says so.
    clock, log = FakeClock(), []
    samplers = {"A": ScriptedSampler("A", log, clock, [0.1, 0.3])}
    watch = ScriptedWatch([{"throttled": 0.05}] * 1000)
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=1.0)
    result = interleave(samplers, {"A": 0.1}, rule, round_s=0.0, round_watch=watch,
                        unfit_budget_factor=3.0)["A"]
    spent = sum(s.seconds for s in result.samples)
    assert 3.0 <= spent < 3.0 + 0.3
    assert result.stopped_by == "budget"
    assert result.unfit_share == 1.0
    assert result.measured == result.samples
    assert set(result.caused_rounds) == {s.round for s in result.samples}
    assert result.unconverged_reason().startswith("unconverged: 0 kept sample(s)")
    assert "set-aside rounds included" in result.unconverged_reason()


def test_rounds_the_os_names_a_cause_for_are_set_aside_for_every_backend_with_it():
    clock, log = FakeClock(), []
    samplers = {"A": SlowInRounds("A", log, clock, 0.01, slow={2}),
                "B": SlowInRounds("B", log, clock, 0.02, slow={2})}
    watch = ScriptedWatch([{}, {}, {"throttled": 0.012, "steal": 0.01}])
    rule = StopRule(target_rel_ci=0.01, min_samples=6, budget_s=10.0)
    results = interleave(samplers, {"A": 0.01, "B": 0.02}, rule, round_s=0.0,
                         round_watch=watch, machine_fit=ScriptedCheck([]))
    for name, seconds in (("A", 0.01), ("B", 0.02)):
        result = results[name]
        assert result.caused_rounds == {2: {"throttled": 0.012, "steal": 0.01}}
        assert result.unfit_rounds == set()  # the OS's cause, not the check's guess
        assert result.ci().median == pytest.approx(seconds)
        assert not result.check_gave_up and not result.unconverged_reason()


def test_a_check_that_calls_most_rounds_unfit_gives_up_and_keeps_the_data():
    # No cause the OS reports, yet every reading is "unfit": the check cannot judge this
    # machine. It stops being asked, every round is kept, and the result says why.
    clock, log = FakeClock(), []
    samplers = {"A": ScriptedSampler("A", log, clock, [0.1, 0.12])}
    check = ScriptedCheck([False] * 1000)
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=1.0)
    result = interleave(samplers, {"A": 0.1}, rule, round_s=0.0, machine_fit=check,
                        round_watch=ScriptedWatch([]))["A"]
    assert result.unfit_rounds == set() and result.unfit_share == 0.0
    assert result.check_gave_up.startswith("cannot judge this machine")
    assert len(check.rounds) <= JUDGE_AFTER_ROUNDS + 1  # not asked once it gave up
    spent = sum(s.seconds for s in result.samples)
    assert 1.0 <= spent < 1.0 + 0.12  # the plain budget, not the grace for set-aside rounds


def test_a_check_that_sets_aside_a_minority_of_rounds_is_trusted():
    clock, log = FakeClock(), []
    samplers = {"A": ScriptedSampler("A", log, clock, [0.1])}
    check = ScriptedCheck([True, True, False, False, False] + [True] * 100)  # rounds 2 and 3
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=1.0)
    result = interleave(samplers, {"A": 0.1}, rule, round_s=0.0, machine_fit=check)["A"]
    assert result.unfit_rounds == {2, 3} and not result.check_gave_up


def test_a_slow_cell_samples_on_past_its_budget_up_to_min_samples():
    # One call takes 0.3 s on a 1 s budget: it used to stop at 4 samples. Within 3x the budget
    # it reaches min_samples 6 and needs no caveat.
    clock, log = FakeClock(), []
    samplers = {"slow": ScriptedSampler("slow", log, clock, [0.3])}
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=1.0)
    result = interleave(samplers, {"slow": 0.3}, rule, round_s=0.0)["slow"]
    assert len(result.samples) == 6  # identical samples: converged at min_samples
    assert result.unconverged_reason() == ""
    # Slower still, the cap ends it first, and the row will say it is short.
    samplers = {"slower": ScriptedSampler("slower", log, clock, [0.9])}
    result = interleave(samplers, {"slower": 0.9}, rule, round_s=0.0)["slower"]
    assert len(result.samples) == 4
    assert result.unconverged_reason().startswith("unconverged: 4 kept sample(s), fewer than "
                                                  "min_samples 6")


def test_the_budget_counts_kept_rounds_once_the_machine_recovers():
    clock, log = FakeClock(), []
    samplers = {"A": ScriptedSampler("A", log, clock, [0.1, 0.3])}
    check = ScriptedCheck([False] * 4)  # rounds 0-2 unfit on both sides
    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=1.0)
    result = interleave(samplers, {"A": 0.1}, rule, round_s=0.0, machine_fit=check)["A"]
    assert result.unfit_rounds == {0, 1, 2}
    kept = sum(s.seconds for s in result.fit_samples())
    assert 1.0 <= kept < 1.0 + 0.3
    assert result.stopped_by == "budget"


def test_a_check_costlier_than_half_the_sampling_stops_being_asked():
    clock, log = FakeClock(), []
    samplers = {"A": ScriptedSampler("A", log, clock, [0.01])}
    answers = iter([True] * 1000)

    def slow_check(round_number):
        clock.now += 0.2  # more than the longest round it may guard (0.5 s / 8)
        return next(answers)

    rule = StopRule(target_rel_ci=1e-9, min_samples=40, budget_s=0.5)
    asked = []
    result = interleave(samplers, {"A": 0.01}, rule, round_s=0.0,
                        machine_fit=lambda r: asked.append(r) or slow_check(r),
                        cost_clock=clock)["A"]
    assert result.check_gave_up.startswith("stopped after round 5")
    assert len(asked) == JUDGE_AFTER_ROUNDS + 1  # before round 0, then after rounds 0-5
    assert result.converged and result.unfit_share == 0.0


def test_rounds_lengthen_until_the_check_costs_a_small_share_of_them():
    # A 4 ms check around rounds of one 1 ms sample: rounds grow to 4 ms / 5% = 80 ms, so the
    # check costs a twentieth of the sampling, not four times it; never past budget / 8.
    clock, log = FakeClock(), []
    samplers = {"A": ScriptedSampler("A", log, clock, [0.001])}

    def check(round_number):
        clock.now += 0.004
        return True

    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=1.0)
    result = interleave(samplers, {"A": 0.001}, rule, round_s=0.001, machine_fit=check,
                        cost_clock=clock)["A"]
    per_round = [sum(1 for name, r in log if r == n) for n in range(2)]
    assert per_round == [1, pytest.approx(80, abs=8)]
    assert result.check_gave_up == ""

    clock, log = FakeClock(), []
    samplers = {"A": ScriptedSampler("A", log, clock, [0.001])}
    interleave(samplers, {"A": 0.001}, StopRule(target_rel_ci=1e-9, min_samples=6,
                                               budget_s=0.4),
               round_s=0.001, machine_fit=check, cost_clock=clock)
    assert sum(1 for name, r in log if r == 1) == 50  # 0.4 s / 8


def test_steal_below_a_backends_own_noise_keeps_the_round_and_throttling_never_does():
    from qkbench.measure.set_aside import disturbs, relative_spread

    noisy = [1.0, 1.1, 0.9, 1.2, 0.8, 1.05, 0.95, 1.15, 0.85, 1.0]  # half-IQR ~ 12%
    assert 0.08 < relative_spread(noisy) < 0.2
    slowed, unmoved = [1.6, 1.7], [1.05, 1.1]  # beyond the upper fence (~1.4), and inside it
    assert not disturbs({"steal": 0.02}, {"steal": 0.03}, slowed, noisy)  # share in its noise
    assert not disturbs({"steal": 0.2}, {"steal": 0.4}, unmoved, noisy)  # did not slow it
    assert disturbs({"steal": 0.2}, {"steal": 0.4}, slowed, noisy)  # far beyond it, and slowed
    assert disturbs({"throttled": 0.001}, {"throttled": 0.01}, unmoved, noisy)  # always
    assert disturbs({"steal": 0.02, "foreign": 0.1}, {"steal": 0.03, "foreign": 0.2}, unmoved,
                    noisy)
    assert disturbs({"steal": 0.02}, None, unmoved, noisy)  # a watch that cannot say how much
    assert relative_spread(noisy[:5]) == 0.0
    assert disturbs({"steal": 0.02}, {"steal": 0.03}, unmoved, noisy[:5])  # noise not yet known
    assert not disturbs({}, {}, slowed, noisy)


def test_slowed_beyond_noise_weighs_a_round_against_the_backends_own_quartiles():
    from qkbench.measure.set_aside import SPREAD_MIN_SAMPLES, slowed_beyond_noise

    rng = random.Random(7)
    tight = [1.0 + 0.01 * rng.random() for _ in range(40)]  # IQR ~ 0.005: fence ~ 1.015
    loose = [1.0 + 0.4 * rng.random() for _ in range(40)]  # IQR ~ 0.2: fence ~ 1.6
    round_ = [1.1, 1.12, 1.09]
    assert slowed_beyond_noise(round_, tight)  # 10% is far outside a 1% cell's noise
    assert not slowed_beyond_noise(round_, loose)  # and inside a 40% one's
    assert not slowed_beyond_noise([], tight)
    assert slowed_beyond_noise(round_, loose[:SPREAD_MIN_SAMPLES - 1])  # unknown: aside


def test_a_round_with_light_steal_is_kept_and_the_set_aside_ratio_says_what_was_taken():
    class Watch:
        """Steal of 2% of capacity in every fourth round, 50% in every seventh."""

        def __init__(self):
            self.round, self.last_shares = -1, {}

        def start(self):
            self.round += 1

        def stop(self):
            if self.round % 7 == 6:
                self.last_shares = {"steal": 0.5}
                return {"steal": 0.5}
            if self.round % 4 == 3:
                self.last_shares = {"steal": 0.02}
                return {"steal": 0.01}
            self.last_shares = {}
            return {}

    watch = Watch()
    rng = random.Random(1)

    def sampler(count, round_number):
        slow = 2.0 if round_number % 7 == 6 else 1.0
        return [Sample(round_number, 0.0, slow * (1.0 + 0.2 * rng.random()), 1)
                for _ in range(count)]

    rule = StopRule(target_rel_ci=1e-9, budget_s=1e9, max_samples=300, min_samples=10)
    result = interleave({"a": sampler}, {"a": 1.0}, rule, min_rounds=60, round_watch=watch)["a"]
    heavy = {r for r in range(60) if r % 7 == 6}
    light = {r for r in range(60) if r % 4 == 3 and r % 7 != 6}
    assert heavy <= set(result.caused_rounds)
    # Once the backend has shown its noise (~5%), 2% steal no longer sets rounds aside.
    assert len(light & result.light_rounds) >= len(light) - 3
    assert 1.8 < result.set_aside_ratio() < 2.2


def test_a_round_the_check_finds_unfit_is_set_aside_only_for_the_backends_it_slowed():
    # Unfit after rounds 9, 10 and 11: rounds 10 and 11 are unfit on both sides. A ran 3x
    # slower in them (a two-thread kernel beside a lost core); B, its one-thread neighbour, did
    # not move. Both have shown their noise by then.
    clock, log = FakeClock(), []
    samplers = {"A": SlowInRounds("A", log, clock, 0.01, slow={10, 11}),
                "B": SlowInRounds("B", log, clock, 0.02, slow=set())}
    check = ScriptedCheck([True] * 10 + [False] * 3)
    rule = StopRule(target_rel_ci=1e-9, min_samples=20, budget_s=10.0)
    results = interleave(samplers, {"A": 0.01, "B": 0.02}, rule, round_s=0.0,
                         machine_fit=check)
    assert results["A"].unfit_rounds == {10, 11}
    assert results["A"].set_aside_ratio() == pytest.approx(3.0)
    assert results["B"].unfit_rounds == set() and results["B"].unfit_share == 0.0
    assert results["B"].light_rounds == {10, 11}
    assert not results["A"].check_gave_up


class StealWatch:
    """Reports `cause` with a share of half the round's capacity in the rounds listed."""

    def __init__(self, rounds, cause="steal"):
        self.rounds, self.cause, self.round, self.last_shares = rounds, cause, -1, {}

    def start(self):
        self.round += 1

    def stop(self):
        hit = self.round in self.rounds
        self.last_shares = {self.cause: 0.5} if hit else {}
        return {self.cause: 0.05} if hit else {}


def test_steal_before_the_noise_is_known_is_judged_again_once_it_is():
    # Steal in round 1, before either backend has 8 undisturbed samples: set aside for both,
    # provisionally. A's samples of it were not slowed, B's were: once their noise is known,
    # A keeps round 1 and B does not. Throttling never waits for the noise.
    clock, log = FakeClock(), []
    samplers = {"A": SlowInRounds("A", log, clock, 0.01, slow=set()),
                "B": SlowInRounds("B", log, clock, 0.02, slow={1})}
    rule = StopRule(target_rel_ci=1e-9, min_samples=20, budget_s=10.0)
    results = interleave(samplers, {"A": 0.01, "B": 0.02}, rule, round_s=0.0,
                         round_watch=StealWatch({1}))
    assert results["A"].caused_rounds == {} and results["A"].light_rounds == {1}
    assert results["B"].caused_rounds == {1: {"steal": 0.05}}
    assert not results["A"].provisional_rounds and not results["B"].provisional_rounds

    clock, log = FakeClock(), []
    samplers = {"A": SlowInRounds("A", log, clock, 0.01, slow=set())}
    result = interleave(samplers, {"A": 0.01}, rule, round_s=0.0,
                        round_watch=StealWatch({1}, cause="throttled"))["A"]
    assert result.caused_rounds == {1: {"throttled": 0.05}}
