"""Backends `numba-loops` (readable single-threaded JIT loops) and `numba` (parallel kernel).

Both compile with `cache=True`, so the 1-10 s of LLVM compilation is paid once per machine
and shows only in a cell's first-call column. The output is allocated by NumPy outside the
jitted code and filled in place: allocating inside njit code is slower and would make the
timed region include Numba's allocator.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from backends.base import Backend, missing_package_reason


@lru_cache(maxsize=None)
def _kernels() -> dict[str, Any]:
    """Compile-on-demand: numba is imported only in the worker that runs these backends."""
    from numba import njit, prange

    @njit(cache=True)
    def loops(q, k, s):
        # The textbook triple loop. Accumulating in s[i, j] keeps the sum in the output dtype,
        # so a float32 cell really is computed in float32.
        n, d_k = q.shape
        m = k.shape[0]
        for i in range(n):
            for j in range(m):
                s[i, j] = 0
                for t in range(d_k):
                    s[i, j] += q[i, t] * k[j, t]

    @njit(cache=True, parallel=True)
    def parallel_rows(q, k, s):
        # One row of S per parallel iteration; the innermost loop walks a row of Q and a row
        # of K, both contiguous, so it vectorises.
        n, d_k = q.shape
        m = k.shape[0]
        for i in prange(n):
            for j in range(m):
                acc = q[i, 0] * k[j, 0]
                for t in range(1, d_k):
                    acc += q[i, t] * k[j, t]
                s[i, j] = acc

    return {"loops": loops, "parallel_rows": parallel_rows}


class _NumbaBackend(Backend):
    device = "cpu"
    dtypes = ("float32", "float64")
    kernel = ""

    def unavailable(self) -> str | None:
        return missing_package_reason("numba", "numba")

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(q), np.ascontiguousarray(k)

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        s = np.empty((q.shape[0], k.shape[0]), dtype=q.dtype)
        _kernels()[self.kernel](q, k, s)
        return s

    def info(self) -> dict[str, Any]:
        import numba

        threads = 1 if self.kernel == "loops" else numba.get_num_threads()
        return {"library_version": numba.__version__, "threads": threads}


class NumbaLoopsBackend(_NumbaBackend):
    name = "numba-loops"
    kernel = "loops"


class NumbaBackend(_NumbaBackend):
    name = "numba"
    kernel = "parallel_rows"
