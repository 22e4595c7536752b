"""What each number includes: phase, cache state, threads, roofline, peaks, fingerprint."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from qkbench.machine import environment
from qkbench.machine import peaks
from qkbench.machine.environment import differences, digest, fingerprint
from qkbench.measure.cell import CellPlan, cold_copies
from qkbench.measure.session import Session
from tests.conftest import REPO, read_summary, run_cli, write_config

PLUGINS = "tests.plugins.misbehaving"


def blas_threads():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


@pytest.fixture
def shape_folder(tmp_path):
    from qkbench.measure import inputs
    inputs.save(inputs.build(64, 48, 16, seed=0, max_reference_elements=1 << 24), tmp_path)
    return str(tmp_path)


def test_end_to_end_includes_prepare_and_kernel_does_not(tmp_path):
    config = write_config(tmp_path, [f"{PLUGINS}:SlowPrepare"], phase=["kernel", "end_to_end"])
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = read_summary(out).set_index("phase")
    # prepare sleeps 20 ms: every end-to-end call contains it; kernel calls never do.
    assert rows.loc["end_to_end", "median_s"] >= 0.02
    assert rows.loc["kernel", "median_s"] < rows.loc["end_to_end", "median_s"]


@pytest.mark.parametrize("cache, copies", [("warm", 1), ("cold", None)])
def test_cold_cache_rotates_copies_and_records_how_many(shape_folder, cache, copies):
    session = Session("qkbench.backends.numpy_backend:NumpyBackend", {})
    plan = CellPlan(dtype="float32", min_sample_s=1e-4, warmup_s=0.0, cache=cache,
                    host_cache_bytes=1 << 20)
    figures = session.setup(shape_folder, plan)
    expected = copies or cold_copies((64 + 48) * 16 * 4, 1 << 20)
    assert figures.cache_copies == expected
    assert len(session.cell.timer._sets) == expected
    assert len({id(q) for q, _ in session.cell.timer._sets}) == expected  # distinct arrays
    session.release()


def test_cold_copies_exceed_twice_the_cache_within_the_cap():
    assert cold_copies(set_bytes=1 << 20, cache_bytes=32 << 20) == 64
    assert cold_copies(set_bytes=1 << 30, cache_bytes=32 << 20) == 2
    assert cold_copies(set_bytes=16, cache_bytes=32 << 20) == 1 << 14


def test_thread_limit_is_in_force_during_the_cell_and_restored_after(shape_folder):
    before = blas_threads()
    session = Session("qkbench.backends.numpy_backend:NumpyBackend", {})
    plan = CellPlan(dtype="float32", min_sample_s=1e-4, warmup_s=0.0, threads=1)
    figures = session.setup(shape_folder, plan)
    assert figures.info["threads"] == 1 and set(blas_threads()) == {1}
    session.release()
    assert blas_threads() == before


@pytest.mark.parametrize("path, module", [
    ("qkbench.backends.torch_backend:TorchCpuBackend", "torch"),
    ("qkbench.backends.numba_backend:NumbaBackend", "numba"),
])
def test_library_thread_pools_are_limited_and_restored(shape_folder, path, module):
    pytest.importorskip(module)
    session = Session(path, {})
    default = session.backend.info()["threads"]
    figures = session.setup(shape_folder, CellPlan(dtype="float32", min_sample_s=1e-4,
                                                    warmup_s=0.0, threads=1))
    assert figures.info["threads"] == 1
    session.release()
    assert session.backend.info()["threads"] == default


def test_threads_axis_records_the_count_in_force_per_row(tmp_path):
    config = write_config(tmp_path, ["numpy", "torch-cpu"], threads=[1, 2])
    out = tmp_path / "run"
    assert run_cli("run", str(config), "--out", str(out), "--no-progress").returncode == 0
    summary = read_summary(out)
    ok = summary[summary["status"] == "ok"]
    assert len(ok) >= 2
    assert (ok["threads"] == ok["threads_requested"]).all()


def test_roofline_columns_and_percent_of_stored_peak(tmp_path, monkeypatch):
    store = tmp_path / "peaks.json"
    key = fingerprint()["hardware_key"]
    store.write_text(json.dumps({key: {"cpu": {"float32": 50.0, "bandwidth_gbs": 10.0}}}))
    monkeypatch.setenv("QKBENCH_PEAKS", str(store))
    config = write_config(tmp_path, ["numpy"], n=[40], m=[24], d_k=[8])
    out = tmp_path / "run"
    assert run_cli("run", str(config), "--out", str(out), "--no-progress").returncode == 0
    row = read_summary(out).iloc[0]
    assert row["bytes"] == (40 * 8 + 24 * 8 + 40 * 24) * 4
    assert row["intensity"] == pytest.approx(row["flops"] / row["bytes"])
    assert row["gbps"] == pytest.approx(row["bytes"] / row["median_s"] / 1e9)
    # Percent of the physical ceiling, which is never below what was measured here.
    physical = peaks.cpu_peak.physical_peak("float32")
    assert row["peak_gflops"] == pytest.approx(max(physical.gflops, 50.0), abs=0.05)
    assert row["pct_peak"] == pytest.approx(100 * row["gflops"] / row["peak_gflops"])
    assert not row["above_peak"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["environment"]["peaks"]["cpu"]["bandwidth_gbs"] == 10.0
    assert meta["environment"]["peaks"]["cpu"]["float32"] == 50.0  # measured, kept beside it
    factors = meta["environment"]["peaks"]["cpu_physical"]["float32"]["factors"]
    assert set(factors) >= {"cores", "fma_units_per_core", "lanes", "clock_ghz"}
    assert all(f["how_found"] for f in factors.values())
    split = meta["time_split_s"]
    assert split["timed work"] > 0 and sum(split.values()) <= meta["wall_s"] * 1.05


def test_peaks_store_round_trip_and_gpu_datasheet(tmp_path):
    store = tmp_path / "p.json"
    peaks.save("abc", {"cpu": {"float32": 1.0}}, store)
    peaks.save("def", {"cpu": {"float32": 2.0}}, store)
    assert peaks.load("abc", store)["cpu"]["float32"] == 1.0
    assert peaks.load("zzz", store) is None
    assert peaks.datasheet("NVIDIA H100 PCIe")["bandwidth_gbs"] == 2_000
    assert peaks.datasheet("NVIDIA H100 80GB HBM3")["bfloat16"] == 989_400
    assert peaks.datasheet("Some Unknown GPU") is None
    by_device, record = peaks.for_run({"hardware_key": "nope", "gpus": [
        {"name": "NVIDIA A100-SXM4-80GB"}]}, store)
    assert by_device[("gpu", "tf32")] == 156_000
    assert "datasheet" in record["gpu"]["source"]


def test_measured_cpu_peaks_are_positive_numbers():
    measured = peaks.measure_cpu(size=128, seconds=0.02)
    assert set(measured) == {"float32", "float64", "bandwidth_gbs"}
    assert all(value > 0 for value in measured.values())


def test_peaks_command_reports_stored_peaks_without_measuring(tmp_path, monkeypatch):
    store = tmp_path / "peaks.json"
    key = fingerprint()["hardware_key"]
    store.write_text(json.dumps({key: {"cpu": {"float32": 123.0}}}))
    monkeypatch.setenv("QKBENCH_PEAKS", str(store))
    result = run_cli("peaks")
    assert result.returncode == 0 and "123.0" in result.stdout and "stored" in result.stdout


def test_fingerprint_has_what_comparisons_need():
    facts = fingerprint()
    for key in ("cpu", "memory_gib", "blas", "libraries", "git", "hostname", "python", "os",
                "gpus", "hardware_key", "comparability_key"):
        assert key in facts
    assert {"L1d", "L2"} <= set(facts["cpu"]["caches"]) or facts["cpu"]["caches"] == {}
    assert facts["comparability_key"] == fingerprint()["comparability_key"]  # stable


def test_comparability_key_follows_hardware_and_software_but_not_hostname():
    facts = fingerprint()
    fields = environment.HARDWARE_FIELDS + environment.SOFTWARE_FIELDS
    renamed = {**facts, "hostname": "elsewhere", "created_utc": "later"}
    assert digest(renamed, fields) == digest(facts, fields)
    upgraded = {**facts, "libraries": {**facts["libraries"], "numpy": "99.0"}}
    assert digest(upgraded, fields) != digest(facts, fields)
    assert differences(facts, upgraded) == [f"libraries.numpy: {np.__version__} vs 99.0"]


def test_env_command_prints_the_fingerprint_as_json():
    result = run_cli("env")
    assert result.returncode == 0
    assert json.loads(result.stdout)["comparability_key"]


def test_workers_start_with_quiet_idle_thread_pools_unless_the_user_chose(monkeypatch):
    from qkbench.measure.worker import _quiet_when_idle

    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    with _quiet_when_idle():
        assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "20"
    assert "OPENBLAS_THREAD_TIMEOUT" not in os.environ  # only while a worker is spawned
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    with _quiet_when_idle():
        assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "28"
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "28"


def test_the_main_process_quiets_its_own_pools_before_numpy_loads():
    # The main process computes references with BLAS; its pool must not spin through the
    # next backend's turn. The library reads the setting once, when it loads, so the CLI must
    # set it before anything imports NumPy.
    code = ("import os, sys; import qkbench.cli; "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["20", "10000"]
    # And numpy must not already be loaded when qkbench.cli sets them.
    code = ("import sys; import qkbench.machine.idle_threads; assert 'numpy' not in sys.modules; "
            "import qkbench; assert 'numpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
