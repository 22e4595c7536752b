"""Built-in backends compute the right S on awkward shapes, and say why when they cannot run."""

import importlib.util

import numpy as np
import pytest

from qkbench.backends.numpy_backend import NumpyBackend
from qkbench.backends.registry import BUILTINS, load_class
from qkbench.measure import inputs
from qkbench.measure.agreement import compare

AWKWARD_SHAPES = [(1, 1, 1), (1, 7, 3), (7, 1, 3), (17, 33, 5), (64, 64, 1), (3, 200, 64),
                  (129, 65, 130)]


def available_builtins(dtype):
    for name, path in BUILTINS.items():
        cls = load_class(path)
        reason = cls().unavailable()
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        if dtype in cls.dtypes:
            yield pytest.param(cls, id=name, marks=marks)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n, m, d_k", AWKWARD_SHAPES)
@pytest.mark.parametrize("backend_class", list(available_builtins("float32")))
def test_builtin_backends_agree_with_the_reference(backend_class, n, m, d_k, dtype):
    backend = backend_class()
    shape = inputs.build(n, m, d_k, seed=0, max_reference_elements=1 << 24)
    q, k = inputs.cast(shape.q, dtype), inputs.cast(shape.k, dtype)
    pq, pk = backend.prepare(q, k)
    s = backend.scores(pq, pk)
    backend.sync()
    host = backend.to_numpy(s)
    assert host.shape == (n, m) and host.dtype == np.dtype(dtype)
    verdict = compare(host, shape.reference, dtype)
    assert verdict.passed, verdict.reason


@pytest.mark.parametrize("backend_class", list(available_builtins("float32")))
def test_non_contiguous_inputs_are_handled(backend_class):
    backend = backend_class()
    shape = inputs.build(40, 30, 16, seed=2, max_reference_elements=1 << 24)
    wide_q = np.repeat(inputs.cast(shape.q, "float32"), 2, axis=1)  # every column twice
    q_view = wide_q[:, ::2]
    k_view = np.asfortranarray(inputs.cast(shape.k, "float32"))
    assert not q_view.flags.c_contiguous and not k_view.flags.c_contiguous
    s = backend.to_numpy(backend.scores(*backend.prepare(q_view, k_view)))
    assert compare(s, shape.reference, "float32").passed


def test_info_reports_threads_and_version():
    info = NumpyBackend().info()
    assert info["library_version"] == np.__version__
    assert info["threads"] >= 1 and "blas" in info


@pytest.mark.parametrize("name, module", [("torch-cpu", "torch"), ("numba", "numba"),
                                          ("numba-loops", "numba")])
def test_missing_library_gives_install_hint(monkeypatch, name, module):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda mod, *a: None if mod == module else real_find_spec(mod, *a))
    reason = load_class(BUILTINS[name])().unavailable()
    assert reason == f"{module} is not installed (pip install 'qkbench[{module}]')"


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_numpy_writes_large_results_to_a_cache_line(dtype):
    # Below ALIGN_FROM_BYTES numpy's own `q @ k.T` runs as is; above it S starts on a 64-byte
    # line, every call, so a process's malloc cannot make numpy's times a lottery.
    from qkbench.backends.numpy_backend import ALIGN_FROM_BYTES, CACHE_LINE

    rng = np.random.default_rng(0)
    backend = NumpyBackend()
    itemsize = np.dtype(dtype).itemsize
    n = int((ALIGN_FROM_BYTES / itemsize) ** 0.5) + 8  # just above the threshold
    for rows in (n, 7):  # a large result and a small one
        q = rng.standard_normal((rows, 16)).astype(dtype)
        k = rng.standard_normal((rows + 3, 16)).astype(dtype)
        for _ in range(3):
            s = backend.scores(q, k)
            assert s.shape == (rows, rows + 3) and s.dtype == dtype and s.flags.c_contiguous
            np.testing.assert_array_equal(s, q @ k.T)
            if rows == n:
                assert s.__array_interface__["data"][0] % CACHE_LINE == 0
