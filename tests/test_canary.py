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


def test_a_reading_near_the_best_is_fit_and_a_slow_one_is_not():
    # Each reading is the fastest of three probe calls.
    canary, _, _ = _canary([1.0, 1.2, 1.0, 1.3, 1.35, 1.4, 1.5, 1.45, 1.6, 2.0, 0.9, 1.0])
    assert canary.fit()  # 1.0: the first reading sets the best
    assert canary.fit()  # 1.3 is within 1.4x of 1.0
    assert not canary.fit()  # 1.45 is not
    assert canary.fit()  # 0.9 is a new best
    assert canary.best_s == pytest.approx(0.9)
    assert (canary.readings, canary.unfit_readings) == (4, 1)


def test_warm_up_finds_the_best_before_the_first_round():
    canary, probe, _ = _canary([0.01, 0.005, 0.02])
    canary.warm_up(seconds=0.03)
    assert canary.best_s == pytest.approx(0.005)
    assert probe.calls == 3
    assert canary.readings == 0  # warming up is not a reading
    assert not canary.fit()  # 0.02 is 4x the best


def test_a_pause_follows_every_reading_so_blas_threads_settle():
    canary, _, pauses = _canary([0.001], settle_s=0.002)
    canary.fit()
    canary.fit()
    assert pauses == [0.002, 0.002]
    assert canary.spent_s == pytest.approx(0.006)  # 2 readings x 3 probes; pauses take no clock time


def test_the_limit_is_adjustable():
    canary, _, _ = _canary([1.0, 1.0, 1.0, 1.2, 1.2, 1.2], slowdown_limit=1.1)
    assert canary.fit()
    assert not canary.fit()


def test_threads_that_buy_no_speed_up_make_the_machine_unfit_even_at_its_best():
    # The run began in such a stretch: the threaded product is at its best, but one thread
    # is as fast. A run's history cannot tell, the one-thread reading can.
    canary, calls = _canary_with_one_thread([1.0], alone_s=1.1)
    assert not canary.fit()  # 1.0 against 1.1 alone: 0.91 > 0.85
    assert canary.best_s == pytest.approx(1.0)
    assert calls == ["one thread"] * 2


def test_a_healthy_speed_up_passes_and_a_slow_reading_skips_the_one_thread_probe():
    canary, calls = _canary_with_one_thread([1.0, 1.0, 1.0, 2.0], alone_s=1.9)
    assert canary.fit()  # 1.0 against 1.9 alone: 0.53
    assert len(calls) == 2
    assert not canary.fit()  # 2.0 is 2x the best: unfit without asking one thread
    assert len(calls) == 2


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
    canary.warm_up(seconds=0.02)
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
    assert "2 of 3 ok cell(s)" in note and "a median 60%" in note
    assert "1 cell(s) kept fewer than 3 samples" in note
