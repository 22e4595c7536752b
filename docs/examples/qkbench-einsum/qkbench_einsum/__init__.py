"""S = Q·Kᵀ through numpy.einsum: a qkbench backend in a package of its own."""

from __future__ import annotations

from typing import Any

import numpy as np

from qkbench import Backend


class EinsumBackend(Backend):
    name = "einsum"  # the label rows, figures and configs use; must not shadow a built-in
    device = "cpu"
    dtypes = ("float32", "float64")

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        # The timed call. On a CPU nothing is queued, so the base class's no-op sync() is right.
        return np.einsum("id,jd->ij", q, k)

    def info(self) -> dict[str, Any]:
        # Facts with a column of their own (library_version) fill it; any other key is kept in
        # the row's `info` mapping.
        return {"library_version": np.__version__, "contraction": "einsum id,jd->ij"}
