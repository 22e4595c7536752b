"""Correctness of the `numba` kernel, on every path, on shapes that do not fit its tiles.

The kernel computes S in R × W register tiles (R = 4 or 8 rows, W = 8 to 32 columns, per
path: qkbench.backends.numba_paths) inside 64 × 256 blocks, so the shapes below straddle every one of
those edges: single rows and columns, d_k = 1, sizes one past a tile or a block, and
non-square inputs. Every path is forced in turn, whatever this CPU would pick: a path is a
geometry, and each geometry runs on any CPU (on one without AVX-512, LLVM lowers the avx512
tile to narrower registers). The first run compiles the kernel (about 10 s per path and
dtype); later runs load it from Numba's cache.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from qkbench.backends.numba_backend import NumbaBackend
from qkbench.backends.numba_paths import PATHS

PATH_NAMES = list(PATHS)
DTYPES = ["float32", "float64"]
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}

SHAPES = [  # (n, m, d_k)
    (1, 1, 1),
    (17, 33, 5),
    (3, 1000, 64),
    (513, 257, 129),
    (1, 300, 64),  # n = 1: one partial row tile
    (300, 1, 64),  # m = 1: every panel but none full
    (40, 70, 1),  # d_k = 1
    (64, 256, 32),  # exactly one block
    (65, 257, 33),  # one past a block in both directions
    (9, 33, 128),  # one past a tile in both directions
    (31, 255, 16),  # one short of a tile in both directions
    (100, 37, 128),
]


def _shape_id(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape))


def _inputs(n: int, m: int, d_k: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Rows of different magnitudes, so the per-element bound below is really per element.
    q = rng.standard_normal((n, d_k)) * rng.uniform(0.1, 10.0, (n, 1))
    k = rng.standard_normal((m, d_k)) * rng.uniform(0.1, 10.0, (m, 1))
    return q.astype(dtype), k.astype(dtype)


def _scores(q: np.ndarray, k: np.ndarray, path: str | None = None) -> np.ndarray:
    backend = NumbaBackend(path=path)
    return backend.to_numpy(backend.scores(*backend.prepare(q, k)))


def _assert_close(s: np.ndarray, q: np.ndarray, k: np.ndarray) -> None:
    """|S_ij − ref_ij| / (‖q_i‖·‖k_j‖) ≤ 8·sqrt(d_k)·u, the reference in float64."""
    assert s.shape == (q.shape[0], k.shape[0])
    assert s.dtype == q.dtype
    q64, k64 = q.astype(np.float64), k.astype(np.float64)
    ref = q64 @ k64.T
    scale = np.outer(np.linalg.norm(q64, axis=1), np.linalg.norm(k64, axis=1))
    bound = 8 * np.sqrt(q.shape[1]) * UNIT_ROUNDOFF[str(q.dtype)]
    err = np.abs(s.astype(np.float64) - ref) / scale
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= bound, f"S{worst} off by {err.max() / bound:.2f}x the bound"


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_matches_float64_reference(shape: tuple[int, int, int], dtype: str, path: str) -> None:
    q, k = _inputs(*shape, dtype)
    _assert_close(_scores(q, k, path), q, k)


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(131, 97, 16), (7, 300, 3), (13, 255, 9)], ids=_shape_id)
def test_every_element_is_written_and_no_other(
    shape: tuple[int, int, int], dtype: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The output and the packing buffers come from np.empty. Hand out NaN-filled views into
    # larger buffers instead: a missed store leaves a NaN in S, and a store past the end of
    # any of the arrays overwrites the NaN guard after it (or before it).
    guard = 64
    buffers = []

    def poisoned_empty(shape, dtype=float, **kwargs):
        size = int(np.prod(shape))
        buffers.append(np.full(size + 2 * guard, np.nan, dtype=dtype))
        return buffers[-1][guard : guard + size].reshape(shape)

    q, k = _inputs(*shape, dtype, seed=1)
    with monkeypatch.context() as patch:
        patch.setattr(np, "empty", poisoned_empty)
        s = _scores(q, k, path)
    _assert_close(s, q, k)
    assert len(buffers) == 3  # S and the packed Q and K
    for buffer in buffers:
        assert np.isnan(buffer[:guard]).all() and np.isnan(buffer[-guard:]).all()


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_inner_dimension_gives_zeros(dtype: str, path: str) -> None:
    q, k = _inputs(5, 7, 0, dtype)
    np.testing.assert_array_equal(_scores(q, k, path), np.zeros((5, 7), dtype=dtype))


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_outputs(dtype: str, path: str) -> None:
    assert _scores(*_inputs(0, 7, 4, dtype), path).shape == (0, 7)
    assert _scores(*_inputs(7, 0, 4, dtype), path).shape == (7, 0)


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate(dtype: str, path: str) -> None:
    # The harness's agreement check must see a NaN, not a number the kernel cleaned up.
    q, k = _inputs(70, 90, 24, dtype, seed=2)
    q[5, 3] = np.nan  # row 5 of S
    q[66, 0] = np.inf  # row 66, in the last (partial) row tile
    k[40, 23] = np.nan  # column 40
    s = _scores(q, k, path)
    assert np.isnan(s[5]).all()
    assert np.isnan(s[:, 40]).all()
    others = [j for j in range(90) if j != 40]
    assert np.isinf(s[66, others]).all()  # k has no zeros, so inf·k_j0 = ±inf
    rest = np.delete(np.delete(s, [5, 66], axis=0), 40, axis=1)
    assert np.isfinite(rest).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs_via_prepare(dtype: str) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((70, 2 * 48)).astype(dtype)
    k_t = rng.standard_normal((48, 45)).astype(dtype)
    cases = {
        "strided columns": (base[:, ::2], base[::-1, 1::2][:45]),
        "transposed K": (base[:, :48], k_t.T),
        "Fortran order": (np.asfortranarray(base[:, :48]), np.asfortranarray(k_t.T)),
    }
    backend = NumbaBackend()
    for name, (q, k) in cases.items():
        assert not (q.flags.c_contiguous and k.flags.c_contiguous), name
        pq, pk = backend.prepare(q, k)
        assert pq.flags.c_contiguous and pk.flags.c_contiguous, name
        _assert_close(backend.to_numpy(backend.scores(pq, pk)), q, k)


def test_inputs_are_not_modified() -> None:
    q, k = _inputs(33, 65, 17, "float32")
    q0, k0 = q.copy(), k.copy()
    _scores(q, k)
    np.testing.assert_array_equal(q, q0)
    np.testing.assert_array_equal(k, k0)


def test_slp_switch_does_not_leak() -> None:
    from numba.core import config

    before = config.SLP_VECTORIZE
    _scores(*_inputs(9, 9, 3, "float32"))
    assert config.SLP_VECTORIZE == before


def test_info_reports_threads() -> None:
    import numba

    info = NumbaBackend().info()
    assert info["threads"] == numba.get_num_threads()
    assert info["library_version"] == numba.__version__
