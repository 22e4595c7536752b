"""Backend `numpy`: S = Q @ Kᵀ through whatever BLAS NumPy was built with."""

from __future__ import annotations

from typing import Any

import numpy as np
from qkbench.backends.base import Backend

# Where `q @ k.T` puts S is up to malloc, 16-byte aligned: measured on Zen 4 (n = m = 1024,
# d_k = 64, float32, two threads), OpenBLAS took 806-848 us to write an S aligned to a 64-byte
# cache line and 909-955 us for one 16 bytes off, and which one a process drew stayed with it.
# torch's CPU allocator aligns every tensor to 64 bytes; without the same here, numpy's times
# (and every ratio to numpy) carried a 13% lottery that says nothing about its BLAS. Aligning
# costs about 2.4 us a call, so small results, where that would be a visible share, are left
# to malloc.
CACHE_LINE = 64
ALIGN_FROM_BYTES = 256 << 10


def _aligned_empty(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """A new uninitialised array whose data starts on a cache line."""
    nbytes = shape[0] * shape[1] * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + CACHE_LINE, dtype=np.uint8)
    offset = -raw.__array_interface__["data"][0] % CACHE_LINE
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


class NumpyBackend(Backend):
    name = "numpy"
    device = "cpu"
    # float16 has no BLAS path in NumPy (it loops in Python-level C), but it is correct.
    dtypes = ("float16", "float32", "float64")

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # BLAS copies non-contiguous operands on every call; make that a one-off cost here.
        return np.ascontiguousarray(q), np.ascontiguousarray(k)

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        n, m = q.shape[0], k.shape[0]
        if n * m * q.itemsize < ALIGN_FROM_BYTES:
            return q @ k.T
        return np.matmul(q, k.T, out=_aligned_empty((n, m), q.dtype))

    def info(self) -> dict[str, Any]:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        facts: dict[str, Any] = {"library_version": np.__version__}
        if blas:
            facts["threads"] = blas[0].get("num_threads")
            facts["blas"] = f"{blas[0].get('internal_api')} {blas[0].get('version')}"
        return facts
