"""Backend `numpy`: S = Q @ Kᵀ through whatever BLAS NumPy was built with.

Attention cells are one broadcast matmul: Q (B, H, n, d_k) viewed as (B, H_kv, H/H_kv·n, d_k),
the query heads of a group stacked, against K (B, H_kv, m, d_k), so K is never repeated; the
(B, H_kv, H/H_kv·n, m) result is S (B, H, n, m) without a copy. Mask and scale follow in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qkbench.backends.base import ATTENTION_FEATURES, Backend

# Where `q @ k.T` puts S is up to malloc, 16-byte aligned: measured on Zen 4 (n = m = 1024,
# d_k = 64, float32, two threads), OpenBLAS took 806-848 us to write an S aligned to a 64-byte
# cache line and 909-955 us for one 16 bytes off, and which one a process drew stayed with it.
# torch's CPU allocator aligns every tensor to 64 bytes; without the same here, numpy's times
# (and every ratio to numpy) carried a 13% lottery that says nothing about its BLAS. Aligning
# costs about 2.4 us a call, so small results, where that would be a visible share, are left
# to malloc.
CACHE_LINE = 64
ALIGN_FROM_BYTES = 256 << 10


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A new uninitialised array whose data starts on a cache line."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + CACHE_LINE, dtype=np.uint8)
    offset = -raw.__array_interface__["data"][0] % CACHE_LINE
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


class NumpyBackend(Backend):
    name = "numpy"
    device = "cpu"
    # float16 has no BLAS path in NumPy (it loops in Python-level C), but it is correct.
    dtypes = ("float16", "float32", "float64")
    attention = frozenset(ATTENTION_FEATURES)

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # BLAS copies non-contiguous operands on every call; make that a one-off cost here.
        q, k = np.ascontiguousarray(q), np.ascontiguousarray(k)
        problem = self.problem
        self._masked = problem.masked() if problem is not None and problem.causal else None
        if q.ndim == 4:
            # The query heads that share a key head, stacked: a view, since q is contiguous.
            batch, heads, n, d_k = q.shape
            q = q.reshape(batch, k.shape[1], heads // k.shape[1] * n, d_k)
        return q, k

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        if q.ndim == 2:
            n, m = q.shape[0], k.shape[0]
            if n * m * q.itemsize < ALIGN_FROM_BYTES:
                return q @ k.T
            return np.matmul(q, k.T, out=_aligned_empty((n, m), q.dtype))
        problem = self.problem
        assert problem is not None, "set_problem comes before an attention cell"
        grouped = q.shape[:3] + (k.shape[2],)
        s = np.matmul(q, k.swapaxes(-1, -2), out=_aligned_empty(grouped, q.dtype))
        s = s.reshape(problem.s_shape())
        if problem.scaled:
            s *= q.dtype.type(problem.scale)
        if self._masked is not None:
            np.copyto(s, -np.inf, where=self._masked)
        return s

    def info(self) -> dict[str, Any]:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        facts: dict[str, Any] = {"library_version": np.__version__}
        if self.problem is not None and "grouped" in self.problem.needs():
            facts["kv_materialised"] = False
        if blas:
            facts["threads"] = blas[0].get("num_threads")
            facts["blas"] = f"{blas[0].get('internal_api')} {blas[0].get('version')}"
        return facts
