"""The backends people compare against: JAX, torch.compile, Triton and Numba CUDA.

Without a GPU, each is checked as far as the CPU allows: jax-cpu and torch-compile-cpu run
real sweeps; the Triton kernel runs in Triton's interpreter (TRITON_INTERPRET=1) and the Numba
CUDA kernel in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), both against a float64
reference on awkward shapes (sizes that fill no tile, d_k over several slices, grouped heads,
causal masks with n < m and n > m; smaller ones of the same kinds in the simulator, which is
slow). Each test skips when its library is not installed.
"""

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from qkbench.backends.registry import BUILTINS, load_class
from qkbench.measure.agreement import error_bound
from tests.conftest import FAST_TIMING, REPO, cli_env

NEW = {"jax-cpu": "cpu", "jax-cuda": "gpu", "torch-compile-cpu": "cpu",
       "torch-compile-cuda": "gpu", "triton": "gpu", "numba-cuda": "gpu"}
# (batch, heads, kv_heads, n, m, d_k, causal, scaled); batch 0 means the plain 2-D product.
CASES = [
    (0, 1, 1, 37, 19, 23, False, False),  # fills no tile, d_k no power of two
    (0, 1, 1, 1, 70, 5, False, False),  # one query
    (0, 1, 1, 65, 3, 130, False, False),  # d_k over three slices of 64
    (2, 4, 2, 33, 45, 20, True, True),  # grouped heads, causal with n < m, scaled
    (1, 3, 1, 45, 33, 16, True, False),  # multi-query, causal with n > m: rows that see nothing
]
# The same kinds of case for Numba's CUDA simulator, which runs each of a block's 16 × 16
# threads as a Python thread (about 0.4 s a block on 2 cores): CASES take 115 blocks per dtype,
# these 26, and still straddle every edge of the kernel's 16 × 16 tiles and 16-wide d_k slices.
SIMULATED_CASES = [
    (0, 1, 1, 19, 17, 40, False, False),  # one past a tile both ways; three slices, the last part
    (0, 1, 1, 1, 20, 5, False, False),  # one query
    (2, 4, 2, 5, 13, 20, True, True),  # batch × grouped heads, causal with n < m, scaled
    (1, 1, 1, 17, 33, 7, True, False),  # causal over 2 × 3 tiles: one lies wholly above the
    # diagonal (its loads are skipped)
    (1, 3, 1, 20, 9, 16, True, False),  # multi-query, causal with n > m: rows that see nothing
]


def inputs_for(case, seed=0):
    batch, heads, kv_heads, n, m, d_k, causal, scaled = case
    rng = np.random.default_rng(seed)
    if batch == 0:
        return rng.standard_normal((n, d_k)), rng.standard_normal((m, d_k))
    return (rng.standard_normal((batch, heads, n, d_k)),
            rng.standard_normal((batch, kv_heads, m, d_k)))


def reference(q, k, causal, scale):
    """float64 S with the design card's semantics, written out plainly."""
    if q.ndim == 2:
        s = q @ k.T
    else:
        group = q.shape[1] // k.shape[1]
        s = q @ np.repeat(k, group, axis=1).transpose(0, 1, 3, 2)
    s = s * scale
    if causal:
        n, m = s.shape[-2:]
        s[..., np.arange(m)[None, :] > np.arange(n)[:, None] + (m - n)] = -np.inf
    return s


def max_scaled_error(s, q, k, causal, scale):
    """max |S − ref| / (scale · ‖q_i‖ · ‖k_j‖) over unmasked entries; the masked ones must be
    exactly −inf (AssertionError otherwise)."""
    s = np.asarray(s, dtype=np.float64)
    ref = reference(q, k, causal, scale)
    assert s.shape == ref.shape
    masked = np.isneginf(ref)
    assert np.array_equal(np.isneginf(s), masked), "masked entries differ"
    assert not np.isnan(s).any()
    qn = np.linalg.norm(q, axis=-1)[..., :, None]
    kn = np.linalg.norm(k, axis=-1)
    if q.ndim == 4:
        kn = np.repeat(kn, q.shape[1] // k.shape[1], axis=1)
    kn = kn[..., None, :]
    err = np.abs(np.where(masked, 0.0, s - np.where(masked, 0.0, ref))) / (scale * qn * kn)
    return float(err.max()) if err.size else 0.0


def cast(x, dtype):
    if dtype == "bfloat16":
        import ml_dtypes

        return x.astype(ml_dtypes.bfloat16)
    return x.astype(dtype)


def upcast(x):
    return np.asarray(x).astype(np.float64)


def case_semantics(case):
    scale = 1.0 / math.sqrt(case[5]) if case[7] else 1.0
    return case[6], scale


# ------------------------------------------------------------------ registry and availability


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_backends_are_builtins_that_explain_what_is_missing(name):
    backend = load_class(BUILTINS[name])()
    assert backend.name == name and backend.device == NEW[name]
    assert {"batched", "grouped", "causal", "scaled"} <= set(backend.attention)
    reason = backend.unavailable()
    if reason is not None:
        assert "\n" not in reason and len(reason) > 15
        assert "pip install" in reason or "GPU" in reason or "CUDA" in reason or "gpu" in reason


def test_torch_compile_rejects_an_unknown_mode():
    from qkbench.backends.torch_compile_backend import TorchCompileCpuBackend

    with pytest.raises(TypeError, match="mode"):
        TorchCompileCpuBackend(mode="fastest")


# ------------------------------------------------------------------ real CPU sweeps


@pytest.mark.slow
def test_jax_cpu_and_torch_compile_cpu_cells_are_ok_in_a_sweep(tmp_path):
    import qkbench

    backends = [name for name, module in (("jax-cpu", "jax"), ("torch-compile-cpu", "torch"))
                if _importable(module)]
    if not backends:
        pytest.skip("neither jax nor torch is installed")
    config = {"name": "new-cpu", "sweep": {"n": [40], "m": [27], "d_k": [20],
                                           "dtype": ["float32", "float64", "bfloat16"]},
              "backends": backends, "timing": {**FAST_TIMING, "processes": 1}}
    run = qkbench.run(config, out=tmp_path / "run")
    rows = run.summary
    assert len(rows) == 3 * len(backends)
    assert (rows["status"] == "ok").all(), rows[["backend", "dtype", "status", "reason"]]
    # Compilation lands in the first call, never in the samples.
    assert (rows["first_call_s"] > rows["median_s"]).all()
    assert (rows["clock"] == "host").all()


def _importable(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_jax_computes_attention_cells():
    pytest.importorskip("jax")
    from qkbench.backends.jax_backend import JaxCpuBackend

    for case in CASES:
        backend = JaxCpuBackend()
        causal, scale = case_semantics(case)
        backend.problem = SimpleNamespace(causal=causal, scale=scale)
        q, k = inputs_for(case)
        prepared = backend.prepare(q, k)
        s = backend.to_numpy(backend.scores(*prepared))
        assert max_scaled_error(s, q, k, causal, scale) <= error_bound(case[5], "float64")


def test_torch_compile_computes_attention_cells():
    pytest.importorskip("torch")
    from qkbench.backends.torch_compile_backend import TorchCompileCpuBackend

    backend = TorchCompileCpuBackend()
    for case in CASES[3:]:
        causal, scale = case_semantics(case)
        backend.problem = SimpleNamespace(causal=causal, scale=scale)
        q, k = inputs_for(case)
        s = backend.to_numpy(backend.scores(*backend.prepare(q.astype(np.float32),
                                                             k.astype(np.float32))))
        backend.cleanup()
        assert max_scaled_error(s, q.astype(np.float32), k.astype(np.float32), causal,
                                scale) <= error_bound(case[5], "float32")


# ------------------------------------------------------------------ Triton, interpreted

# Triton and Numba decide at import whether they interpret or simulate (and torch.compile may
# have imported Triton already in this process): each check runs in a fresh process.
_INTERPRETED = """
import json
import numpy as np
from qkbench.backends.triton_backend import triton_scores
from qkbench.backends.torch_backend import _tensor_to_numpy, torch_from_numpy
from tests.test_new_backends import CASES, case_semantics, cast, inputs_for, max_scaled_error, upcast
errors = []
for dtype in ("float32", "float64", "float16", "bfloat16"):
    for case in CASES:
        causal, scale = case_semantics(case)
        q64, k64 = inputs_for(case)
        q, k = cast(q64, dtype), cast(k64, dtype)
        s = _tensor_to_numpy(triton_scores(torch_from_numpy(q), torch_from_numpy(k), causal,
                                           scale))
        errors.append([dtype, case[5], str(s.dtype),
                       max_scaled_error(upcast(s), upcast(q), upcast(k), causal, scale)])
print(json.dumps({"errors": errors}))
"""


def _in_fresh_process(script, **env):
    return _in_fresh_processes(script, [[]], **env)[0]


def _in_fresh_processes(script, arguments, **env):
    """`script` in one fresh process per list of arguments, all at once; their JSON answers."""
    started = [subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO,
                                env={**cli_env(), **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for args in arguments]
    answers = []
    for process in started:
        try:
            stdout, stderr = process.communicate(timeout=600)
        finally:
            process.kill()
        assert process.returncode == 0, stderr[-3000:]
        answers.append(json.loads(stdout.splitlines()[-1]))
    return answers


def _assert_within_bounds(errors, dtypes, cases=CASES):
    assert len(errors) == len(dtypes) * len(cases)
    for dtype, d_k, out_dtype, error in errors:
        assert out_dtype == dtype  # S comes back in the cell's dtype
        assert error <= error_bound(d_k, dtype), (dtype, d_k, error)


@pytest.mark.slow
def test_triton_kernel_agrees_with_float64_in_the_interpreter():
    pytest.importorskip("triton")
    pytest.importorskip("torch")
    out = _in_fresh_process(_INTERPRETED, TRITON_INTERPRET="1")
    _assert_within_bounds(out["errors"], ["float32", "float64", "float16", "bfloat16"])


def test_triton_float32_is_not_tf32():
    """The interpreter computes every dot in full precision, so it cannot show TF32; what it
    can show is that the kernel asks for IEEE float32 (Triton's default is TF32)."""
    import inspect

    from qkbench.backends import triton_backend

    assert 'input_precision="ieee"' in inspect.getsource(triton_backend._kernel)


# ------------------------------------------------------------------ Numba CUDA, simulated

_SIMULATED = """
import json, math, sys
import numpy as np
from qkbench.backends.numba_cuda_backend import NumbaCudaBackend, numba_cuda_scores
from tests.test_new_backends import (SIMULATED_CASES, case_semantics, cast, inputs_for,
                                    max_scaled_error)
out = {"unavailable": NumbaCudaBackend().unavailable(), "errors": []}
for dtype in sys.argv[1:]:
    for case in SIMULATED_CASES:
        causal, scale = case_semantics(case)
        q64, k64 = inputs_for(case)
        q, k = cast(q64, dtype), cast(k64, dtype)
        s = numba_cuda_scores(q, k, causal, scale)
        out["errors"].append([dtype, case[5], str(s.dtype),
                              max_scaled_error(s.astype(np.float64), q.astype(np.float64),
                                               k.astype(np.float64), causal, scale)])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_numba_cuda_kernel_agrees_with_float64_in_the_simulator():
    pytest.importorskip("numba")
    if not _importable("numba_cuda"):
        pytest.skip("numba-cuda is not installed (pip install 'qkbench[numba-cuda]')")
    # One process per dtype, side by side: the simulator's threads mostly wait for each other
    # at the kernel's barriers, so three processes take little longer than one.
    dtypes = ["float32", "float64", "float16"]
    answers = _in_fresh_processes(_SIMULATED, [[dtype] for dtype in dtypes],
                                  NUMBA_ENABLE_CUDASIM="1")
    for answer in answers:
        assert "simulator" in answer["unavailable"]  # it never times the simulator as a GPU
    errors = [error for answer in answers for error in answer["errors"]]
    _assert_within_bounds(errors, dtypes, SIMULATED_CASES)


def test_gpu_tests_skip_cleanly_here():
    """The new GPU backends' cells on this machine: skipped with their reason, never failed."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "" or not _gpu_here():
        for name in ("jax-cuda", "torch-compile-cuda", "triton", "numba-cuda"):
            assert load_class(BUILTINS[name])().unavailable()


def _gpu_here():
    from tests.conftest import _cuda_gpu_present

    return _cuda_gpu_present()


# ------------------------------------------------------------------ TF32 behind a float32 label


def test_tf32_behind_a_float32_label_is_caught(tmp_path):
    """The trap the device check sets on a GPU, emulated here: inputs rounded to TF32."""
    import qkbench

    config = {"name": "trap", "sweep": {"n": [64], "d_k": [64], "dtype": ["float32"]},
              "backends": ["tests.plugins.silent_tf32:SilentTf32Cpu", "numpy"],
              "timing": {**FAST_TIMING, "processes": 1}}
    rows = qkbench.run(config, out=tmp_path / "run").summary.set_index("backend")
    assert rows.loc["silent-tf32-cpu", "status"] == "mismatch"
    assert rows.loc["numpy", "status"] == "ok"


# ------------------------------------------------------------------ on a real GPU


@pytest.mark.gpu
def test_every_gpu_backend_runs_with_events_flush_and_graphs(tmp_path):
    import qkbench

    names = ["torch-cuda", "cupy", "triton", "numba-cuda", "jax-cuda", "torch-compile-cuda",
             "tests.plugins.silent_tf32:SilentTf32TorchCuda"]
    config = {"name": "gpu-new", "sweep": {"n": [100, 1000], "d_k": [40],
                                           "dtype": ["float32", "float16"],
                                           "cache": ["warm", "cold"]},
              "backends": names, "timing": {**FAST_TIMING, "processes": 1, "cuda_graphs": True}}
    rows = qkbench.run(config, out=tmp_path / "run").summary
    trap = rows[rows["backend"] == "silent-tf32-torch-cuda"]
    assert (trap.loc[trap["dtype"] == "float32", "status"] == "mismatch").all()
    rows = rows[rows["backend"] != "silent-tf32-torch-cuda"]
    ran = rows[rows["status"] != "skipped"]
    assert (ran["status"] == "ok").all(), ran[["backend", "dtype", "status", "reason"]]
    torch_rows = ran[ran["backend"] == "torch-cuda"].set_index(["n", "dtype", "cache"])
    assert (torch_rows["clock"] == "cuda-events").all()
    assert torch_rows.xs("cold", level="cache")["l2_flush"].all()
    assert torch_rows.xs("warm", level="cache")["cuda_graph"].all()
    assert (ran.loc[ran["backend"] == "jax-cuda", "clock"] == "host").all()
