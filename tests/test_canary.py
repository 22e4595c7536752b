"""The machine check between rounds: a fake probe and clock decide what the canary reads."""

from __future__ import annotations

import pytest

from qkbench.machine.canary import ParallelCanary


class ScriptedProbe:
    """Each call advances a fake clock by the next scripted duration (the last one repeats)."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def clock(self):
        return self.now

    def __call__(self):
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


def _canary(durations, **kwargs):
    probe, pauses = ScriptedProbe(durations), []
    canary = ParallelCanary(probe, clock=probe.clock, pause=pauses.append, **kwargs)
    return canary, probe, pauses


def _canary_with_one_thread(durations, alone_s):
    """A canary whose one-thread probe takes `alone_s` on the same fake clock; the list
    records each one-thread call."""
    probe, calls = ScriptedProbe(durations), []

    def alone():
        calls.append("one thread")
        probe.now += alone_s

    canary = ParallelCanary(probe, one_thread_probe=alone, clock=probe.clock,
                            pause=lambda s: None)
    return canary, calls


def _calibrated(spread, **kwargs):
    """A canary warmed up on readings that cycle through `spread` (one probe call each, as
    the fastest of three identical calls), then scripted on."""
    durations = [d for d in spread for _ in range(3)]
    probe, pauses = ScriptedProbe(durations * 100), []
    canary = ParallelCanary(probe, clock=probe.clock, pause=pauses.append, **kwargs)
    return canary, probe


def test_until_calibrated_every_reading_is_fit():
    canary, _, _ = _canary([1.0, 1.0, 1.0, 5.0, 5.0, 5.0])
    assert canary.fit() and canary.fit()  # nothing to judge a reading against yet
    assert canary.limits() == (None, None)


def test_the_fence_comes_from_the_machine_s_own_spread_not_its_best_reading():
    # A widely spread probe (the Emerald Rapids VM: best 131 us, typical 180-190 us). Against
    # "1.4x the best" most readings would be unfit; against its own quartiles none are.
    spread = [131e-6, 180e-6, 183e-6, 185e-6, 186e-6, 188e-6, 190e-6, 184e-6]
    canary, probe = _calibrated(spread)
    canary.warm_up(readings=32, max_s=float("inf"))
    time_fence, _ = canary.limits()
    assert time_fence > 190e-6
    unfit = sum(not canary.fit() for _ in range(100))
    assert unfit == 0
    assert canary.best_s == pytest.approx(131e-6)
    assert canary.readings == 100  # warming up is not a reading


def test_a_reading_far_beyond_the_machine_s_spread_is_unfit():
    spread = [1.0, 1.02, 0.99, 1.01, 1.0, 0.98]
    canary, probe = _calibrated(spread)
    canary.warm_up(readings=24, max_s=float("inf"))
    probe.durations = [2.0] * 6 + [1.0] * 3
    probe.calls = 0
    assert not canary.fit()  # 2x the usual, and again when read at once: far out
    assert canary.fit()
    assert (canary.readings, canary.unfit_readings, canary.confirmations) == (2, 1, 1)


def test_a_one_off_slow_reading_is_read_again_and_not_called_unfit():
    # An interrupt or a timer tick in one reading: the confirming reading is usual.
    spread = [1.0, 1.02, 0.99, 1.01, 1.0, 0.98]
    canary, probe = _calibrated(spread)
    canary.warm_up(readings=24, max_s=float("inf"))
    probe.durations = [2.0] * 3 + [1.0] * 3
    probe.calls = 0
    assert canary.fit()
    assert (canary.readings, canary.unfit_readings, canary.confirmations) == (1, 0, 1)
    assert probe.calls == 6  # two readings of three probes


def test_a_tight_machine_s_fence_is_never_closer_than_the_margin():
    canary, probe = _calibrated([1.0], min_margin=0.05)
    canary.warm_up(readings=20, max_s=float("inf"))
    assert canary.limits()[0] == pytest.approx(1.05)  # IQR 0: the margin decides
    probe.durations = [1.04] * 3 + [1.06] * 6
    probe.calls = 0
    assert canary.fit()
    assert not canary.fit()


def test_warm_up_takes_readings_like_the_run_s_and_drops_the_first():
    canary, probe, pauses = _canary([0.05] * 3 + [0.001] * 300, settle_s=0.002)
    canary.warm_up(readings=20, max_s=float("inf"))
    assert len(canary.times) == 20 and max(canary.times) == pytest.approx(0.001)
    assert len(pauses) == 21  # a pause after every reading, the dropped one too
    assert canary.readings == 0


def test_a_pause_follows_every_reading_so_blas_threads_settle():
    canary, _, pauses = _canary([0.001], settle_s=0.002)
    canary.fit()
    canary.fit()
    assert pauses == [0.002, 0.002]
    assert canary.spent_s == pytest.approx(0.006)  # 2 readings x 3 probes; pauses take no clock time


def test_threads_that_lose_their_usual_speed_up_make_the_machine_unfit():
    # Healthy: threaded 1.0 against 1.9 alone. Then one thread is as fast as two: the threaded
    # time alone would not tell (it is within its spread), the speed-up does.
    canary, calls = _canary_with_one_thread([1.0], alone_s=1.9)
    for _ in range(20):
        assert canary.fit()
    assert len(calls) == 40
    alone = canary._one_thread_probe

    def as_fast():
        calls.append("one thread")
        canary._clock.__self__.now += 1.02

    canary._one_thread_probe = as_fast
    assert not canary.fit()  # 1.0 / 1.02 = 0.98 against a history of 0.53
    canary._one_thread_probe = alone
    assert canary.fit()


def test_the_one_thread_probe_restores_the_blas_threads():
    from threadpoolctl import ThreadpoolController

    from qkbench.machine.canary import _blas_products

    blas = ThreadpoolController().select(user_api="blas")
    threads = [info["num_threads"] for info in blas.info()]
    threaded, one_thread = _blas_products(size=32)
    threaded()
    if max(threads, default=1) < 2:
        assert one_thread is None  # nothing to compare one thread with
        return
    one_thread()
    assert [info["num_threads"] for info in blas.info()] == threads


def test_the_real_canary_times_a_blas_product():
    canary = ParallelCanary()
    canary.warm_up(readings=4)
    assert 0.0 < canary.best_s < 1.0
    assert canary.fit() in (True, False)  # whether the machine is fit now is not ours to say
    assert canary.readings == 1
    assert canary.spent_s > 0.0


def test_run_notes_rounds_set_aside_and_cells_that_kept_too_few():
    import pandas as pd

    from qkbench.present.console import machine_check_note

    clean = pd.DataFrame({"status": ["ok", "error"], "samples": [20, 0],
                          "unfit_share": [0.0, 0.5]})
    assert machine_check_note(clean) == ""  # a failed cell's share is no timing caveat
    assert machine_check_note(pd.DataFrame({"status": ["ok"], "samples": [9]})) == ""  # older run
    # 20 kept of 25; and a cell whose 10 samples were all set aside, so it reports all of them.
    hit = pd.DataFrame({"status": ["ok", "ok", "ok"], "samples": [20, 10, 30],
                        "unfit_share": [0.2, 1.0, 0.0]})
    note = machine_check_note(hit)
    assert "set aside in 2 of 3 ok cell(s)" in note and "a median 60%" in note
    assert "1 cell(s) kept fewer than 3 samples" in note


def test_run_notes_os_causes_a_check_that_gave_up_and_short_cells():
    import pandas as pd

    from qkbench.present.console import machine_check_note

    rows = pd.DataFrame({"status": ["ok", "ok", "ok"], "samples": [20, 12, 4],
                         "unfit_share": [0.3, 0.0, 0.0],
                         "set_aside_causes": ["throttled 0.120 s in 4 rounds", "", ""],
                         "machine_check": ["on", "cannot judge this machine: ...", "on"],
                         "reason": ["", "", "unconverged: 4 kept sample(s), fewer than "
                                    "min_samples 10; stopped by budget"]})
    note = machine_check_note(rows)
    assert "causes the OS reported: throttled in 1" in note
    assert "could not judge this machine in 1 ok cell(s)" in note
    assert "1 ok cell(s) have fewer kept samples than min_samples" in note


def test_a_slow_machine_s_warm_up_is_cut_short_and_the_run_s_readings_calibrate():
    canary, probe, _ = _canary([0.01] * 1000)  # 50 ms a reading: 5 readings fill 0.25 s
    canary.warm_up(readings=24, max_s=0.25)
    assert len(canary.times) < 24
    assert canary.limits() == (None, None)  # not calibrated yet: every reading is fit
    while len(canary.times) < 16:
        assert canary.fit()
    assert canary.limits()[0] is not None
