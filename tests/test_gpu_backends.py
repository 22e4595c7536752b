"""GPU backends: what can be checked without a GPU here, and real-GPU tests marked `gpu`.

Tests marked `gpu` run only where torch or CuPy sees a CUDA GPU (tests/conftest.py skips them
elsewhere); everything else runs on any machine.
"""

import os

import numpy as np
import pandas as pd
import pytest

from qkbench.measure.cell import CellFigures
from qkbench.backends.cupy_backend import CupyBackend, CupyTf32Backend
from qkbench.backends.registry import BUILTINS, load_class
from qkbench.backends.torch_backend import TorchCudaBackend, TorchCudaTf32Backend, TorchMpsBackend
from qkbench.analysis import crossover
from qkbench.measure import inputs
from qkbench.measure.agreement import compare
from qkbench.runner import throttled
from tests.conftest import _cuda_gpu_present, read_summary, run_cli, write_config

FAKE = "tests.plugins.fake_gpu"
GPU_BACKENDS = ["torch-cuda", "torch-cuda-tf32", "torch-mps", "cupy", "cupy-tf32"]


@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_gpu_backends_are_gpu_and_explain_why_they_cannot_run(name):
    backend = load_class(BUILTINS[name])()
    assert backend.device == "gpu"
    reason = backend.unavailable()
    if reason is not None:  # on this machine; on a GPU machine they are available
        assert len(reason) > 10 and "\n" not in reason
        assert any(word in reason for word in ("CUDA", "MPS", "not installed", "GPU", "cupy"))


def test_tf32_variants_say_so_and_full_precision_ones_do_not():
    assert TorchCudaBackend().precision("float32") == "float32"
    assert TorchCudaTf32Backend().precision("float32") == "tf32"
    assert CupyBackend().precision("float32") == "float32"
    assert CupyTf32Backend().precision("float32") == "tf32"
    assert TorchCudaTf32Backend().precision("float16") == "float16"
    assert "float64" not in TorchMpsBackend.dtypes  # Metal has no float64


def test_cupy_tf32_switches_are_set_before_the_first_matmul(monkeypatch):
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "1")
    CupyBackend()._configure_tf32()
    assert os.environ["CUPY_TF32"] == "0" and os.environ["NVIDIA_TF32_OVERRIDE"] == "0"
    CupyTf32Backend()._configure_tf32()
    assert os.environ["CUPY_TF32"] == "1" and "NVIDIA_TF32_OVERRIDE" not in os.environ


def test_configs_for_gpus_skip_cleanly_without_one(tmp_path):
    if _cuda_gpu_present():
        pytest.skip("a GPU is here: the GPU sweep would run for real (see the gpu tests)")
    out = tmp_path / "run"
    result = run_cli("run", "gpu", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = read_summary(out)
    assert len(summary) == 160 and (summary["status"] == "skipped").all()
    assert summary["reason"].str.len().gt(10).all()


def test_cells_that_do_not_fit_in_device_memory_are_skipped(tmp_path):
    # 1 MiB free: 16×16 float32 fits, 512×512 (1 MiB for S alone, twice) does not.
    config = write_config(tmp_path, [f"{FAKE}:FakeGpu"], n=[16, 512])
    out = tmp_path / "run"
    assert run_cli("run", str(config), "--out", str(out), "--no-progress").returncode == 0
    rows = read_summary(out).set_index("n")
    assert rows.loc[16, "status"] == "ok"
    assert rows.loc[512, "status"] == "skipped"
    assert "GiB of device memory" in rows.loc[512, "reason"]


def test_device_out_of_memory_is_status_oom_and_the_sweep_goes_on(tmp_path):
    config = write_config(tmp_path, [f"{FAKE}:OutOfDeviceMemory", "numpy"], n=[16, 24])
    out = tmp_path / "run"
    assert run_cli("run", str(config), "--out", str(out), "--no-progress").returncode == 1
    summary = read_summary(out)
    assert set(summary[summary.backend == "oom-fake-gpu"]["status"]) == {"oom"}
    assert set(summary[summary.backend == "numpy"]["status"]) == {"ok"}


def test_clock_drop_during_sampling_flags_the_cell_as_throttled(tmp_path):
    config = write_config(tmp_path, [f"{FAKE}:FakeGpu", f"{FAKE}:SteadyFakeGpu"])
    out = tmp_path / "run"
    assert run_cli("run", str(config), "--out", str(out), "--no-progress").returncode == 0
    rows = read_summary(out).set_index("backend")
    assert rows.loc["fake-gpu", "sm_clock_start_mhz"] == 1980.0
    assert rows.loc["fake-gpu", "sm_clock_end_mhz"] == 1500.0
    assert bool(rows.loc["fake-gpu", "throttled"]) is True
    assert bool(rows.loc["steady-fake-gpu", "throttled"]) is False
    assert rows.loc["fake-gpu", "peak_device_bytes"] == 123_456
    assert rows.loc["fake-gpu", "temperature_end_c"] > rows.loc["fake-gpu", "temperature_start_c"]


def test_throttle_rule():
    assert throttled(CellFigures(sm_clock_start_mhz=1980.0, sm_clock_end_mhz=1800.0)) is True
    assert throttled(CellFigures(sm_clock_start_mhz=1980.0, sm_clock_end_mhz=1900.0)) is False
    assert throttled(CellFigures()) is None


def summary_table(rows):
    frame = pd.DataFrame(rows, columns=["backend", "device", "n", "m", "median_s", "phase"])
    return frame.assign(status="ok", dtype="float32", cache="warm", d_k=64)


def test_crossover_is_the_smallest_n_from_which_the_gpu_keeps_winning():
    rows = []
    cpu = {64: 1e-5, 128: 4e-5, 256: 3e-4, 512: 2e-3, 1024: 1.6e-2}
    gpu = {64: 2e-5, 128: 3e-5, 256: 4e-4, 512: 5e-4, 1024: 1e-3}  # a lone win at 128
    for n, cpu_s in cpu.items():
        rows += [("numpy", "cpu", n, n, cpu_s, "kernel"),
                 ("torch-cpu", "cpu", n, n, cpu_s * 1.5, "kernel"),
                 ("cupy", "gpu", n, n, gpu[n], "kernel"),
                 ("cupy", "gpu", n, n, gpu[n] * 50, "end_to_end"),
                 ("numpy", "cpu", n, n, cpu_s, "end_to_end")]
    table = crossover.speedups(summary_table(rows))
    kernel = table[table.phase == "kernel"].set_index("n")
    assert kernel.loc[1024, "speedup"] == pytest.approx(16.0)
    assert kernel.loc[1024, "cpu_backend"] == "numpy"  # the best CPU backend, not any
    result = crossover.crossovers(table).set_index("phase")
    assert result.loc["kernel", "crossover_n"] == 512
    assert pd.isna(result.loc["end_to_end", "crossover_n"])  # transfers: GPU never wins here
    text = crossover.describe(summary_table(rows))
    assert "GPU wins from n = 512" in text and "does not win" in text


def test_no_crossover_table_without_both_devices_or_shared_shapes():
    rows = [("numpy", "cpu", 64, 64, 1e-5, "kernel")]
    assert crossover.describe(summary_table(rows)) == ""
    disjoint = [("numpy", "cpu", 64, 64, 1e-5, "kernel"), ("cupy", "gpu", 128, 128, 1e-5,
                                                             "kernel")]
    assert crossover.describe(summary_table(disjoint)) == ""


# ---------------------------------------------------------------- real GPU


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["torch-cuda", "cupy"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_real_gpu_backends_agree_in_full_precision(name, dtype):
    backend = load_class(BUILTINS[name])()
    if backend.unavailable():
        pytest.skip(backend.unavailable())
    shape = inputs.build(1024, 768, 256, seed=0, max_reference_elements=1 << 24)
    q, k = inputs.cast(shape.q, dtype), inputs.cast(shape.k, dtype)
    s = backend.to_numpy(backend.scores(*backend.prepare(q, k)))
    backend.sync()
    assert compare(s, shape.reference, backend.precision(dtype)).passed
    backend.cleanup()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["torch-cuda-tf32", "cupy-tf32"])
def test_real_tf32_fails_a_float32_bound_and_passes_its_own(name):
    backend = load_class(BUILTINS[name])()
    if backend.unavailable():
        pytest.skip(backend.unavailable())
    shape = inputs.build(1024, 1024, 256, seed=0, max_reference_elements=1 << 24)
    q, k = inputs.cast(shape.q, "float32"), inputs.cast(shape.k, "float32")
    s = backend.to_numpy(backend.scores(*backend.prepare(q, k)))
    assert compare(s, shape.reference, "tf32").passed
    # On tensor-core GPUs (Ampere and newer) TF32 really is less precise than float32.
    assert not compare(s, shape.reference, "float32").passed
    backend.cleanup()


@pytest.mark.gpu
def test_torch_cuda_bfloat16_round_trips_through_ml_dtypes():
    backend = TorchCudaBackend()
    if backend.unavailable():
        pytest.skip(backend.unavailable())
    shape = inputs.build(256, 256, 64, seed=0, max_reference_elements=1 << 24)
    q, k = inputs.cast(shape.q, "bfloat16"), inputs.cast(shape.k, "bfloat16")
    s = backend.to_numpy(backend.scores(*backend.prepare(q, k)))
    assert s.dtype.name == "bfloat16"
    assert compare(s, shape.reference, "bfloat16").passed


@pytest.mark.gpu
def test_cpu_vs_gpu_config_reports_a_crossover(tmp_path):
    out = tmp_path / "run"
    result = run_cli("run", "cpu-vs-gpu", "--out", str(out), "--no-progress", timeout=900)
    assert result.returncode == 0, result.stderr
    assert "GPU over CPU" in result.stdout
    summary = read_summary(out)
    assert {"cpu", "gpu"} <= set(summary[summary.status == "ok"]["device"])
    assert np.isfinite(summary["median_s"].dropna()).all()
