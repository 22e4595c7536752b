"""The runner's machine check end to end, on real backends and workers: a scripted canary
decides which rounds are set aside; they must be kept, flagged, paired across the group, and
left out of the figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import qkbench.measure.set_aside as set_aside_module
import qkbench.runner as runner_module
from qkbench.cli import main
from qkbench.measure.timing import MIN_FIT_SAMPLES
from tests.conftest import write_config


class EveryThirdCheckUnfit:
    """Stands in for ParallelCanary: every third reading says the machine is unfit."""

    period = 3

    def __init__(self, **settings):
        self.calls, self.spent_s = 0, 0.0

    def warm_up(self):
        pass

    def fit(self):
        self.calls += 1
        return self.calls % self.period != 0


class TwoInEveryFourChecksUnfit(EveryThirdCheckUnfit):
    """Unfit on the 2nd and 3rd reading of every four (after rounds 0 and 1, 4 and 5, ...):
    one round in four (1, 5, ...) has an unfit reading on both sides, so the check keeps
    judging; rounds 0, 2, 4 and 6 are unfit on one side only, and kept."""

    period = 4

    def fit(self):
        self.calls += 1
        return self.calls % self.period not in (2, 3)


class MustNotBeBuilt:
    def __init__(self):
        raise AssertionError("the machine check is off: no canary may be built")


def _run(tmp_path, sweep=None, **timing):
    backend = {"name": "tests.plugins.pid_logging:PidLogging",
               "options": {"log": str(tmp_path / "pids.txt")}}
    # The runner's default of three workers (tests' FAST_TIMING has one): rounds take turns
    # among them, and each round is judged in the worker that sampled it too.
    config = write_config(tmp_path, ["numpy", backend], timing={"processes": 3, **timing},
                          **(sweep or {}))
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-plots"]) == 0
    return pd.read_parquet(out / "summary.parquet"), pd.read_parquet(out / "samples.parquet")


def test_rounds_set_aside_are_kept_flagged_and_left_out_of_the_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "ParallelCanary", TwoInEveryFourChecksUnfit)
    # The scripted check calls rounds unfit that nothing slowed, and a round is set aside only
    # for a backend it slowed beyond its own noise: here every round it calls unfit counts as
    # slowed, for this test is about what becomes of the rounds set aside.
    monkeypatch.setattr(set_aside_module, "slowed_beyond_noise", lambda *_: True)
    summary, samples = _run(tmp_path, min_samples=12)
    unfit_rounds, sampled_rounds = {}, {}
    for row in summary.itertuples():
        mine = samples[samples["backend"] == row.backend]
        fit = mine[mine["machine_fit"]]
        if row.machine_check.startswith("cannot judge"):
            # The workers' own checks are real: on a busy machine they may call most rounds
            # unfit, and then the check gives up on the group and keeps every round.
            assert len(fit) == len(mine) and row.unfit_share == 0.0
            unfit_rounds[row.backend], sampled_rounds[row.backend] = set(), set(mine["round"])
            continue
        # A check that cost more than half the sampling stops being asked (a loaded machine).
        assert row.machine_check == "on" or row.machine_check.startswith("stopped after")
        assert len(fit) < len(mine)  # some rounds were set aside, and they were kept
        used = fit if len(fit) >= MIN_FIT_SAMPLES else mine
        assert row.samples == len(used)
        assert row.unfit_share == pytest.approx(1 - len(fit) / len(mine))
        assert row.median_s == pytest.approx(float(np.median(used["seconds"])))
        unfit_rounds[row.backend] = set(mine.loc[~mine["machine_fit"], "round"])
        sampled_rounds[row.backend] = set(mine["round"])
    # Every unfit round slowed every backend here, so it is set aside for the whole group and
    # the backends stay paired in every round both sampled (one may sample on after the other
    # hit its budget).
    both = sampled_rounds["numpy"] & sampled_rounds["pid-logging"]
    assert both
    assert unfit_rounds["numpy"] & both == unfit_rounds["pid-logging"] & both


def _only_os_causes_set_rounds_aside(summary: pd.DataFrame, samples: pd.DataFrame) -> None:
    """With no machine check, the rounds set aside are those the OS named a cause for (steal,
    throttling, other processes' CPU: a machine shared with other jobs, or with the other
    workers of a parallel test run, shows them), and every other round counts."""
    caused = samples["set_aside_cause"].fillna("") != ""
    assert samples.loc[~caused, "machine_fit"].all()
    for row in summary.itertuples():
        mine = caused[samples["backend"] == row.backend]
        assert row.unfit_share == pytest.approx(mine.mean())
        if not mine.any():
            assert row.samples == len(mine)


def test_with_the_check_off_every_round_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "ParallelCanary", MustNotBeBuilt)
    summary, samples = _run(tmp_path, machine_check=False)
    _only_os_causes_set_rounds_aside(summary, samples)


def test_one_threaded_groups_are_not_checked(tmp_path, monkeypatch):
    # Losing parallel capacity did not slow one-threaded work: no canary, no rounds set aside.
    monkeypatch.setattr(runner_module, "ParallelCanary", MustNotBeBuilt)
    summary, samples = _run(tmp_path, sweep={"threads": [1]})
    assert (summary["status"] == "ok").all()
    _only_os_causes_set_rounds_aside(summary, samples)


class AnsweringWorker:
    """Stands in for a worker process: answers the check request, or fails it."""

    alive = True

    def __init__(self, answer):
        self.answer, self.asked = answer, 0

    def request(self, message, timeout_s):
        assert message == ("check",) and timeout_s >= RequestsTo.left_s
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class RequestsTo:
    """Stands in for a cell's time limit: the check is bounded by it, never charged to it."""

    left_s = 7.0

    def request(self, worker, message):
        raise AssertionError("a check must not spend the cell's time")


def test_a_round_is_unfit_when_the_process_that_sampled_it_is():
    from qkbench.runner import PreparedCell, machine_check
    from qkbench.measure.cell import CellFailure

    main = EveryThirdCheckUnfit()  # fit, fit, unfit, ...
    fine, slow = AnsweringWorker(True), AnsweringWorker(False)
    dead = AnsweringWorker(CellFailure("crashed", "killed by SIGKILL"))
    cell = PreparedCell(cell=None, figures={}, limit=RequestsTo(), workers=[fine, slow, dead])
    spent = []
    check = machine_check(main, [cell], spent.append)
    assert check(None)  # before the first round: the main process only
    assert fine.asked == slow.asked == 0
    assert not check(1)  # round 1 was sampled in worker 1, which lost its speed-up
    assert slow.asked == 1 and fine.asked == 0
    assert not check(3)  # worker 0 is fine, but the main process's third reading is unfit
    assert check(2)  # a worker that died answers nothing; its next sample request will say so
    assert dead.asked == 1
    # After round 0, worker 0 and the main process are fit, but the reading is also the side
    # before round 1, whose process was unfit when it last answered: a process that stays
    # unfit has both sides of its rounds unfit.
    assert not check(0)
    assert fine.asked == 2 and slow.asked == 1
    assert len(spent) == 5 and all(s >= 0 for s in spent)


def test_a_worker_runs_the_check_in_its_own_process():
    from qkbench.measure.session import Session

    session = Session("qkbench.backends.numpy_backend:NumpyBackend", {})
    assert session.check() in (True, False)  # whether this machine is fit now is not ours
    assert session.check() in (True, False)
    default = session.canaries[None]
    assert default.readings == 2 and default.best_s > 0
    # A cell on another thread count gets a check of its own: a best time taken on more
    # threads would make every reading on fewer look slow.
    session.cell_threads = 2
    session.check()
    assert set(session.canaries) == {None, 2} and default.readings == 2
