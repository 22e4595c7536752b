"""End to end through the real CLI: real backends, plugins that misbehave, interrupts."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from qkbench.records.results import SAMPLE_COLUMNS, SUMMARY_COLUMNS, kept_mask
from tests.conftest import REPO, cli_env, interruptible, read_summary, run_cli, write_config

PLUGINS = "tests.plugins.misbehaving"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`qkbench run quick` once for the module: the configuration the README promises."""
    out = tmp_path_factory.mktemp("quick") / "run"
    started = time.monotonic()
    result = run_cli("run", "quick", "--out", str(out), plots=True)  # as the README runs it
    return result, out, time.monotonic() - started


def test_quick_run_succeeds(quick_run):
    # No wall-time bound here: a unit test never asserts a timing (a loaded 2-core CI machine
    # takes several times longer than a quiet one); benchmarks/ measures the wall time.
    result, out, _ = quick_run
    assert result.returncode == 0, result.stderr[-2000:]
    assert "run directory:" in result.stdout and "GFLOP/s" in result.stdout
    assert len(list((out / "figures").glob("*.png"))) >= 3  # run draws its figures by default


def test_run_directory_holds_tables_and_metadata(quick_run):
    _, out, _ = quick_run
    for name in ("summary.parquet", "summary.csv", "samples.parquet", "meta.json",
                 "cells.jsonl", "samples.jsonl"):
        assert (out / name).is_file(), name
    summary = read_summary(out)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == 16  # 4 backends × 2 sizes × 2 dtypes
    assert set(summary["status"]) <= {"ok", "skipped"}
    ok = summary[summary["status"] == "ok"]
    assert "numpy" in set(ok["backend"])
    assert (ok["median_s"] > 0).all()
    with_ci = ok[ok["samples"] >= 6]  # fewer samples cannot give a 95% interval of the median
    assert len(with_ci) and with_ci["ci_low_s"].notna().all()
    assert (with_ci["ci_low_s"] <= with_ci["median_s"]).all()
    assert (with_ci["median_s"] <= with_ci["ci_high_s"]).all()
    expected_gflops = 2 * ok["n"] * ok["m"] * ok["d_k"] / ok["median_s"] / 1e9
    assert np.allclose(ok["gflops"].astype(float), expected_gflops.astype(float))
    assert (ok["max_err"] <= ok["err_bound"]).all()
    assert (ok["first_call_s"] > 0).all()
    assert (ok["processes"] == 3).all()  # the default timing.processes
    if sys.platform.startswith("linux"):  # read from /proc
        assert ok["foreign_load"].notna().all() and (ok["foreign_load"] >= 0).all()
    samples = pd.read_parquet(out / "samples.parquet")
    assert list(samples.columns) == SAMPLE_COLUMNS
    # `samples` counts the samples the figures came from: not those the machine check set aside.
    cell = ["backend", "dtype", "n"]
    per_cell = samples[kept_mask(samples, cell)].groupby(cell).size()
    for _, row in ok.iterrows():
        assert per_cell[(row["backend"], row["dtype"], row["n"])] == row["samples"]
    assert ((ok["unfit_share"] >= 0) & (ok["unfit_share"] <= 1)).all()


def test_csv_keeps_full_precision(quick_run):
    _, out, _ = quick_run
    from_csv = pd.read_csv(out / "summary.csv")
    from_parquet = read_summary(out)
    assert from_csv["median_s"].tolist() == pytest.approx(from_parquet["median_s"].tolist(),
                                                          rel=0, abs=0, nan_ok=True)


def test_meta_records_config_versions_and_machine(quick_run):
    _, out, _ = quick_run
    meta = json.loads((out / "meta.json").read_text())
    assert meta["state"] == "finished"
    assert meta["config"]["name"] == "quick"
    env = meta["environment"]
    assert env["qkbench_version"] and env["libraries"]["numpy"]
    assert env["cpu"]["logical_cores"] >= 1 and env["cpu"]["model"]
    assert env["blas"] and "commit" in env["git"]
    assert meta["cells_by_status"].get("ok", 0) >= 4


def test_failed_cells_make_the_command_exit_1_without_a_traceback(tmp_path):
    """What the CLI adds to a run with failures (the statuses are tested through the API in
    tests/test_api.py): exit code 1 and one line saying so."""
    config = write_config(tmp_path, ["numpy", f"{PLUGINS}:Raises"])
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "cell(s) failed" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_finished_cells_and_exits_130(tmp_path, sig):
    # A plugin slow enough that the run is still going when the signal arrives.
    config = write_config(tmp_path, ["numpy", f"{PLUGINS}:Good"],
                          timing={"budget_s": 0.5, "target_rel_ci": 1e-6},
                          n=[16, 24, 32, 40, 48, 56, 64, 72])
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "qkbench", "run", str(config), "--out",
                                str(out), "--no-progress"], cwd=REPO, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)
    log = out / "cells.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or log.read_text().count("\n") < 2):
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = read_summary(out)
    assert 2 <= len(summary) < 16
    assert set(summary["status"]) == {"ok"}
    assert json.loads((out / "meta.json").read_text())["state"] == "interrupted"


def test_console_script_and_module_are_the_same_command():
    result = subprocess.run(["qkbench", "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("qkbench ")
    assert run_cli("--version").stdout == result.stdout
