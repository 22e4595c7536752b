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
from tests.conftest import REPO, cli_env, read_summary, run_cli, write_config

PLUGINS = "tests.plugins.misbehaving"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`qkbench run quick` once for the module: the configuration the README promises."""
    out = tmp_path_factory.mktemp("quick") / "run"
    started = time.monotonic()
    result = run_cli("run", "quick", "--out", str(out), plots=True)  # as the README runs it
    return result, out, time.monotonic() - started


def test_quick_run_succeeds_within_a_minute(quick_run):
    result, out, seconds = quick_run
    assert result.returncode == 0, result.stderr[-2000:]
    assert seconds < 60
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


def test_misbehaving_backends_get_the_right_status_and_lose_nothing(tmp_path):
    backends = ["numpy"] + [f"{PLUGINS}:{name}" for name in (
        "Good", "WrongShape", "WrongDtype", "NotAnArray", "ReturnsNaN", "OffByConstant",
        "TransposedIndexing", "Raises", "Segfaults", "Aborts", "Exits", "RunsOutOfMemory",
        "UnavailableRaises", "NotHere", "Float32Only", "RoundsToTf32", "Hangs")]
    config = write_config(tmp_path, backends, timing={"timeout_s": 4},
                          dtype=["float32", "float64"])
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress")
    assert result.returncode == 1, result.stderr[-3000:]
    summary = read_summary(out)
    status = {(r.backend, r.dtype): r.status for r in summary.itertuples()}
    reason = {(r.backend, r.dtype): r.reason for r in summary.itertuples()}
    for dtype in ("float32", "float64"):
        assert status[("numpy", dtype)] == "ok"
        assert status[("good-plugin", dtype)] == "ok"
        for name in ("wrong-shape", "not-an-array", "returns-nan",
                     "off-by-constant", "transposed"):
            assert status[(name, dtype)] == "mismatch", (name, reason[(name, dtype)])
        assert status[("raises", dtype)] == "error"
        assert "kernel launch failed on purpose" in reason[("raises", dtype)]
        assert status[("segfaults", dtype)] == "crashed"
        assert "SIGSEGV" in reason[("segfaults", dtype)]
        assert status[("aborts", dtype)] == "crashed"
        assert "SIGABRT" in reason[("aborts", dtype)]
        assert status[("exits", dtype)] == "crashed"
        assert "code 3" in reason[("exits", dtype)]
        assert status[("out-of-memory", dtype)] == "oom"
        assert status[("unavailable-raises", dtype)] == "error"
        assert "driver query failed" in reason[("unavailable-raises", dtype)]
        assert status[("not-here", dtype)] == "skipped"
        assert reason[("not-here", dtype)] == "needs the imaginary QPU-9000"
        assert status[("hangs", dtype)] == "timeout"
    assert status[("float32-only", "float32")] == "ok"
    assert status[("float32-only", "float64")] == "skipped"
    assert status[("wrong-dtype", "float32")] == "mismatch"
    assert status[("wrong-dtype", "float64")] == "ok"  # float64 is right for a float64 cell
    assert status[("tf32-in-disguise", "float32")] == "mismatch"
    assert "exceeds the float32 bound" in reason[("tf32-in-disguise", "float32")]
    assert reason[("wrong-shape", "float32")] == ("first call: output has shape (32, 31), "
                                                  "expected (32, 32)")
    # A mismatch is not timed, and says by how much it missed.
    nan_row = summary[(summary.backend == "off-by-constant") & (summary.dtype == "float32")]
    assert nan_row["samples"].iloc[0] == 0 and pd.isna(nan_row["median_s"].iloc[0])
    assert nan_row["max_err"].iloc[0] > nan_row["err_bound"].iloc[0]
    assert "cell(s) failed" in result.stderr
    assert "Traceback" not in result.stdout


def test_a_backend_that_hangs_while_sampling_times_out_and_keeps_its_setup_figures(tmp_path):
    config = write_config(tmp_path, ["numpy", f"{PLUGINS}:HangsWhileSampling"],
                          timing={"timeout_s": 3, "budget_s": 1, "target_rel_ci": 1e-6,
                                  "warmup_s": 0.0})
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress")
    assert result.returncode == 1
    summary = read_summary(out).set_index("backend")
    assert summary.loc["hangs-later", "status"] == "timeout"
    assert summary.loc["hangs-later", "max_err"] <= summary.loc["hangs-later", "err_bound"]
    assert summary.loc["numpy", "status"] == "ok"


def test_unavailable_backends_are_skipped_and_the_run_still_succeeds(tmp_path):
    config = write_config(tmp_path, ["numpy", f"{PLUGINS}:NotHere", f"{PLUGINS}:Float32Only"],
                          dtype=["float32", "float64"])
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = read_summary(out)
    assert sorted(summary["status"]) == ["ok", "ok", "ok", "skipped", "skipped", "skipped"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_finished_cells_and_exits_130(tmp_path, sig):
    # A plugin slow enough that the run is still going when the signal arrives.
    config = write_config(tmp_path, ["numpy", f"{PLUGINS}:Good"],
                          timing={"budget_s": 0.5, "target_rel_ci": 1e-6},
                          n=[16, 24, 32, 40, 48, 56, 64, 72])
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "qkbench", "run", str(config), "--out",
                                str(out), "--no-progress"], cwd=REPO, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
