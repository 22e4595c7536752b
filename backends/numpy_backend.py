"""Backend `numpy`: S = Q @ Kᵀ through whatever BLAS NumPy was built with."""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    device = "cpu"
    # float16 has no BLAS path in NumPy (it loops in Python-level C), but it is correct.
    dtypes = ("float16", "float32", "float64")

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # BLAS copies non-contiguous operands on every call; make that a one-off cost here.
        return np.ascontiguousarray(q), np.ascontiguousarray(k)

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        return q @ k.T

    def info(self) -> dict[str, Any]:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        facts: dict[str, Any] = {"library_version": np.__version__}
        if blas:
            facts["threads"] = blas[0].get("num_threads")
            facts["blas"] = f"{blas[0].get('internal_api')} {blas[0].get('version')}"
        return facts
