"""The worker pool under stress: healthy cells end `ok` beside backends that crash, hang, raise
or turn slow, and each faulty cell ends with its own status. benchmarks/pool_stress.py repeats
the bigger sweep many times and counts the healthy cells that did not end ok."""

from __future__ import annotations

import pytest
import yaml

from qkbench.measure.handles import CellTimeout
from qkbench.measure.kernel_timer import KernelTimer
from tests.conftest import read_summary, run_cli
from tests.test_timing import FakeClock
from tests.plugins.faults_at_size import stress_config, wrong_cells


def _run(tmp_path, config: dict):
    path = tmp_path / "stress.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    result = run_cli("run", str(path), "--out", str(out), "--no-progress", timeout=300)
    assert (out / "summary.parquet").exists(), result.stderr
    return read_summary(out)


def test_a_sample_request_returns_the_blocks_it_has_once_its_wall_limit_has_passed():
    """Each call takes a second of the fake clock: of 100 blocks asked for, the request ends
    after the block that passes its 3.5 s; it always takes one; without a limit, all of them."""
    clock = FakeClock()

    def call(q, k):
        clock.now += 1.0

    timer = KernelTimer(call, [(None, None)], lambda: None, clock)
    assert len(timer.samples(100, 1, 0, wall_limit_s=3.5)) == 4
    assert len(timer.samples(100, 1, 0, wall_limit_s=0.0)) == 1
    assert len(timer.samples(100, 1, 0)) == 100


def test_a_cell_lets_one_sample_request_take_a_quarter_of_its_time_left():
    limit = CellTimeout(8.0)
    assert limit.sample_wall_s() == pytest.approx(2.0)
    limit.left_s = -1.0
    assert limit.sample_wall_s() == 0.0


@pytest.mark.slow
def test_a_backend_whose_calls_turn_slow_mid_request_ends_ok_not_timeout(tmp_path):
    """Its sample requests were planned from its fast blocks; once each call takes 500 times
    as long, one request of them would outlast the cell's whole time limit (a 0.02 s round
    becomes 10 s). The worker answers with the blocks it has after a share of the time left,
    and the cell ends its sampling in time."""
    at_n = 512
    config = stress_config(["turns-slow"], [at_n], at_n, processes=1, timeout_s=8.0,
                           budget_s=4.0, sleep_s=1.0)
    config["backends"] = config["backends"][1:]  # the plugin alone
    config["timing"]["target_rel_ci"] = 1e-4  # still sampling when its calls turn slow
    summary = _run(tmp_path, config)
    assert wrong_cells(summary, at_n).empty, summary[["status", "reason"]].to_string()


@pytest.mark.slow
def test_healthy_cells_end_ok_beside_backends_that_crash_hang_and_raise(tmp_path):
    at_n = 256
    summary = _run(tmp_path, stress_config(["none", "hang", "segfault", "raise", "nan"],
                                           [64, at_n], at_n, processes=2, timeout_s=8.0,
                                           budget_s=0.2))
    assert len(summary) == 6 * 2
    wrong = wrong_cells(summary, at_n)
    assert wrong.empty, wrong.to_string()
