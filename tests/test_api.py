"""The public API, in-process: `qkbench.run` on tiny sweeps, `load_run`, `compare`, `Backend`.

These are the runner's end-to-end tests: no CLI subprocess, so they are cheaper and show what
a notebook user sees. What only the command line adds (exit codes, messages) is in test_run.py.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import qkbench
from qkbench.records.meta import SCHEMA_VERSION
from qkbench.records.record import FAILED_STATUSES, SUMMARY_COLUMNS, parse_info
from qkbench.runner import SCRATCH_DIR

from tests.conftest import FAST_TIMING

PLUGINS = "tests.plugins.misbehaving"
DATA = Path(__file__).parent / "data" / "runs"


def tiny(backends, timing=None, **sweep):
    """A config mapping, the shape of a YAML file: one small shape unless told otherwise."""
    return {"name": "api-test", "sweep": {"n": [32], "d_k": [16], "dtype": ["float32"], **sweep},
            "backends": backends, "timing": {**FAST_TIMING, **(timing or {})}}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same tiny sweep twice, in process: numpy (whose info() reports its BLAS) and a plugin.
    Nothing here depends on how their times compare (see test_compare_reads_the_runs_...)."""
    folder = tmp_path_factory.mktemp("api")
    config = tiny(["numpy", f"{PLUGINS}:Good"], n=[32, 64])
    return [qkbench.run(config, out=folder / name) for name in ("a", "b")]


def test_run_returns_the_run_directory_read_back(two_runs):
    run = two_runs[0]
    assert isinstance(run, qkbench.Run) and run.state == "finished"
    assert list(run.summary.columns) == SUMMARY_COLUMNS
    assert len(run.summary) == 4 and set(run.summary["status"]) == {"ok"}
    assert run.failed.empty
    assert (run.samples["seconds"] > 0).all() and len(run.samples) >= 4 * 6
    assert run.meta["schema_version"] == SCHEMA_VERSION
    assert run.meta["config"]["name"] == "api-test" and run.meta["config_file"] == "<python>"
    # meta.json is written by the run writer: the same dict the Run carries
    assert json.loads((run.path / "meta.json").read_text())["state"] == "finished"
    # the shared inputs lived inside the run directory and are gone at the end
    assert not (run.path / SCRATCH_DIR).exists()
    assert qkbench.load_run(run.path).summary.equals(run.summary)
    record = run.records()[0]  # the typed row: fields are the columns
    assert record.status == "ok" and record.median_s > 0 and isinstance(record.info, dict)
    assert record.key().backend == record.backend


def test_a_backend_fact_without_a_column_is_kept_in_info(two_runs):
    summary = two_runs[0].summary
    numpy_rows = summary[summary["backend"] == "numpy"]
    info = [parse_info(text) for text in numpy_rows["info"]]
    # numpy's info() reports its BLAS, which has no column: kept, not dropped
    assert all("blas" in facts for facts in info), info
    assert numpy_rows["library_version"].notna().all()  # a fact with a column fills it
    assert "library_version" not in info[0]
    csv = pd.read_csv(two_runs[0].path / "summary.csv")
    assert json.loads(csv["info"].iloc[0]) == info[0]  # JSON in the tables


def test_compare_through_the_api_on_recorded_runs():
    """Verdicts from recorded runs, so they are certain: gpubox's CPU rows are the laptop's
    with every time divided by 4 (tests/data/README.md), and the bootstrap is seeded. A Run
    on one side, a path on the other."""
    server = qkbench.load_run(DATA / "gpubox")
    comparison = qkbench.compare(server, DATA / "laptop", threshold=0.5,
                                 allow_different_machines=True)
    table = comparison.table
    assert {"backend", "n", "phase", "verdict", "baseline", "candidate", "ratio", "ci_low",
            "ci_high", "baseline_samples", "note"} <= set(table)
    assert len(table) == len(server.summary)  # every laptop cell is one of gpubox's too
    verdicts = table.groupby("verdict").size().to_dict()
    assert verdicts == {"slower": 38, "same": 8, "not comparable": 18, "only in baseline": 128}
    # The laptop is the server 4x slower: each regression is a CPU kernel cell at 4x, whose
    # whole interval lies above the 50% threshold.
    regressions = comparison.regressions
    assert len(regressions) == 38 and {c.verdict for c in regressions} == {"slower"}
    assert all(c.ratio == pytest.approx(4.0) and c.ci_low > 1.5 for c in regressions)
    assert {c.key["backend"] for c in regressions} == {"numpy", "numba", "torch-cpu"}
    only = table[table["verdict"] == "only in baseline"]
    assert set(only["backend"]) >= {"torch-cuda", "cupy"} and set(
        table.loc[table["phase"] == "end_to_end", "verdict"]) == {"only in baseline"}
    failed = table[(table["backend"] == "tf32-in-disguise") & (table["phase"] == "kernel")]
    assert set(failed["verdict"]) == {"not comparable"}  # mismatch or skipped: no times
    markdown = comparison.to_markdown()
    assert markdown.startswith(f"### 🔴 qkbench compare: {comparison.headline()}\n")
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    # the header, its rule, then one row per cell, regressions first
    assert len(rows) == 2 + len(table) and "| slower |" in rows[2]
    # Drift-proof mode: divided by numpy in the same round, a machine 4x slower moves nothing.
    normalised = qkbench.compare(server, DATA / "laptop", threshold=0.5, normalize_by="numpy",
                                 allow_different_machines=True)
    ntable = normalised.table
    assert normalised.regressions == []
    numpy_kernel = (ntable["backend"] == "numpy") & (ntable["phase"] == "kernel")
    assert set(ntable.loc[numpy_kernel, "verdict"]) == {"reference"}
    judged = ntable[ntable["verdict"] == "same"]
    assert len(judged) == 28 and np.allclose(judged["ratio"], 1.0)
    assert "normalised: each sample ÷ numpy" in normalised.to_markdown()


def test_a_run_compared_with_itself_has_no_regression():
    """A/A on identical samples, not on two runs of the code (whose verdict the machine
    decides): every judged ratio is exactly 1, and the seeded bootstrap keeps each interval
    the same from one test run to the next."""
    laptop = qkbench.load_run(DATA / "laptop")
    comparison = qkbench.compare(DATA / "laptop", laptop, threshold=0.5)
    table = comparison.table
    assert comparison.regressions == [] and comparison.exit_code == 0
    assert set(table["verdict"]) == {"same", "not comparable"}
    assert np.allclose(table.loc[table["verdict"] == "same", "ratio"], 1.0)


def test_compare_reads_the_runs_this_version_writes(two_runs):
    """Two real runs of the same code: what they compare to depends on the machine, so only
    the shape of the answer is checked here, never a verdict (those are tested above and in
    tests/test_compare.py on runs with known samples)."""
    comparison = qkbench.compare(two_runs[0], two_runs[1].path, threshold=0.5)
    table = comparison.table
    assert len(table) == 4 and {"backend", "n", "verdict", "ratio", "ci_low"} <= set(table)
    assert set(table["verdict"]) <= {"same", "faster", "slower", "not comparable"}
    slower = table[table["verdict"] == "slower"]
    assert sorted((c.key["backend"], c.key["n"]) for c in comparison.regressions) == sorted(
        zip(slower["backend"], slower["n"]))
    assert len([line for line in comparison.to_markdown().splitlines()
                if line.startswith("| ")]) == 2 + 4
    normalised = qkbench.compare(two_runs[0], two_runs[1], normalize_by="numpy")
    assert set(normalised.table.loc[normalised.table["backend"] == "numpy", "verdict"]) == {
        "reference"}


def test_overrides_merge_into_a_shipped_config(tmp_path):
    run = qkbench.run("quick", out=tmp_path / "q", backends=["numpy"],
                      sweep={"n": [32], "dtype": ["float32"]}, timing={"budget_s": 0.05})
    assert run.meta["config"]["name"] == "quick"
    assert run.meta["config"]["sweep"]["d_k"] == [32]  # kept from quick.yaml
    assert len(run.summary) == 1 and run.summary["status"].iloc[0] == "ok"


def test_a_bad_config_is_a_usage_error_before_anything_runs(tmp_path):
    with pytest.raises(qkbench.UsageError, match="sweep"):
        qkbench.run({"name": "x", "sweep": {"n": [32], "bogus": 1}, "backends": ["numpy"]},
                    out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("name", ["laptop", "gpubox"])
def test_load_run_reads_wave_1_run_directories(name):
    run = qkbench.load_run(DATA / name)
    assert "schema_version" not in run.meta  # written before the typed record
    assert list(run.summary.columns) == SUMMARY_COLUMNS
    assert set(run.summary["info"]) == {"{}"}
    ok = run.summary[run.summary["status"] == "ok"]
    assert ok["gflops"].notna().all() and ok["bytes"].notna().all()
    assert np.allclose(ok["intensity"], ok["flops"] / ok["bytes"])


def test_a_plugin_extends_qkbench_backend():
    from qkbench.backends.base import Backend

    from tests.plugins.good_plugin import EinsumBackend

    assert qkbench.Backend is Backend and issubclass(EinsumBackend, qkbench.Backend)


def test_misbehaving_backends_get_the_right_status_and_lose_nothing(tmp_path):
    backends = ["numpy"] + [f"{PLUGINS}:{name}" for name in (
        "Good", "WrongShape", "WrongDtype", "NotAnArray", "ReturnsNaN", "OffByConstant",
        "TransposedIndexing", "Raises", "Segfaults", "Aborts", "Exits", "RunsOutOfMemory",
        "UnavailableRaises", "NotHere", "Float32Only", "RoundsToTf32", "Hangs")]
    run = qkbench.run(tiny(backends, timing={"timeout_s": 4}, dtype=["float32", "float64"]),
                      out=tmp_path / "run")
    summary = run.summary
    assert len(run.failed) == (summary["status"].isin(FAILED_STATUSES)).sum() > 0
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
    # A mismatch's reason names the check that failed first (docs/correctness.md).
    assert reason[("wrong-shape", "float32")] == ("first call: output has shape (32, 31), "
                                                  "expected (32, 32)")
    # A mismatch is not timed, and says by how much it missed.
    nan_row = summary[(summary.backend == "off-by-constant") & (summary.dtype == "float32")]
    assert nan_row["samples"].iloc[0] == 0 and pd.isna(nan_row["median_s"].iloc[0])
    assert nan_row["max_err"].iloc[0] > nan_row["err_bound"].iloc[0]


def test_a_backend_that_hangs_while_sampling_times_out_and_keeps_its_setup_figures(tmp_path):
    run = qkbench.run(tiny(["numpy", f"{PLUGINS}:HangsWhileSampling"],
                           timing={"timeout_s": 3, "budget_s": 1, "target_rel_ci": 1e-6}),
                      out=tmp_path / "run")
    summary = run.summary.set_index("backend")
    assert summary.loc["hangs-later", "status"] == "timeout"
    assert summary.loc["hangs-later", "max_err"] <= summary.loc["hangs-later", "err_bound"]
    assert summary.loc["numpy", "status"] == "ok"


def test_unavailable_backends_are_skipped_and_the_run_still_succeeds(tmp_path):
    run = qkbench.run(tiny(["numpy", f"{PLUGINS}:NotHere", f"{PLUGINS}:Float32Only"],
                           dtype=["float32", "float64"]), out=tmp_path / "run")
    summary = run.summary
    assert run.failed.empty
    assert sorted(summary["status"]) == ["ok", "ok", "ok", "skipped", "skipped", "skipped"]




def test_a_backend_s_max_gflop_skips_its_larger_cells_only(tmp_path):
    # n = 16: 2·16·16·16 = 8.2e-6 GFLOP; n = 64: 1.3e-4 GFLOP, above the labelled entry's limit.
    config = {"name": "limits", "sweep": {"n": [16, 64], "d_k": [16]},
              "backends": ["numpy", {"name": "numpy", "label": "numpy-small", "max_gflop": 1e-5}],
              "timing": {"budget_s": 0.02, "machine_check": False, "processes": 1}}
    summary = qkbench.run(config, out=tmp_path / "run").summary.set_index(["backend", "n"])
    assert summary.loc[("numpy", 64), "status"] == "ok"
    assert summary.loc[("numpy-small", 16), "status"] == "ok"
    skipped = summary.loc[("numpy-small", 64)]
    assert skipped["status"] == "skipped" and "above the max_gflop 1e-05" in skipped["reason"]
    with pytest.raises(qkbench.UsageError, match="max_gflop"):
        qkbench.run({**config, "backends": [{"name": "numpy", "max_gflop": 0}]},
                    out=tmp_path / "never")


def test_validate_counts_the_cells_a_max_gflop_will_skip():
    from tests.conftest import run_cli

    result = run_cli("validate", "default")
    assert result.returncode == 0, result.stderr
    # numba-loops stops at n = 1024: its four n = 2048 cells (two d_k, two dtypes) are skipped
    assert "64 cells" in result.stdout and "4 above a backend's max_gflop" in result.stdout
