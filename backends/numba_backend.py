"""Backends `numba-loops` (readable single-threaded JIT loops) and `numba` (register-tiled kernel).

The jitted code lives in qkbench.backends.numba_kernels, imported only when a kernel is first called
(in the worker that runs it: constructing a backend must not import Numba). The `numba`
kernel's tile geometry is one of the paths in qkbench.backends.numba_paths, picked from the CPU
Numba compiles for, or forced with the backend option `path` or $QKBENCH_NUMBA_PATH; the
path in use is recorded with each row (see `info`).

The output is allocated by NumPy outside the jitted code and filled in place: allocating
inside njit code is slower and would make the timed region include Numba's allocator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qkbench.backends import numba_attention, numba_paths
from qkbench.backends.base import ATTENTION_FEATURES, Backend, missing_package_reason


class _NumbaBackend(Backend):
    device = "cpu"
    dtypes = ("float32", "float64")
    kernel = ""
    attention = frozenset(ATTENTION_FEATURES)  # batched, grouped, causal, scaled: numba_attention

    def unavailable(self) -> str | None:
        return missing_package_reason("numba", "numba")

    def load(self) -> None:
        from qkbench.backends import numba_kernels

        numba_kernels.ready_target()

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Importing Numba and registering its typing libraries (once per process, about half a
        # second, mostly probing SciPy's BLAS) is start-up (`load`), or setup where the backend
        # is used without the harness's workers: never in the first call, so first_call_s holds
        # what this kernel's first call costs (compiling it, or loading its cached machine
        # code). Done once, it costs nothing here.
        from qkbench.backends import numba_kernels

        numba_kernels.ready_target()
        return np.ascontiguousarray(q), np.ascontiguousarray(k)

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        if q.ndim == 4:  # an attention cell: parallel over batch × heads
            return numba_attention.scores(self, q, k)
        from qkbench.backends import numba_kernels

        s = np.empty((q.shape[0], k.shape[0]), dtype=q.dtype)
        getattr(numba_kernels, self.kernel)(q, k, s)
        return s

    def info(self) -> dict[str, Any]:
        import numba

        if self.problem is not None and not self.problem.plain:  # an attention cell
            return {"library_version": numba.__version__,
                    "threads": numba_attention.threads(self), **numba_attention.info(self)}
        threads = 1 if self.kernel == "loops" else numba.get_num_threads()
        return {"library_version": numba.__version__, "threads": threads}

    def set_threads(self, count: int | None) -> None:
        import numba

        # NUMBA_NUM_THREADS is the pool's size (and the default); set_num_threads may only
        # lower it, so asking for more raises a ValueError that names the limit.
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS if count is None else count)


class NumbaLoopsBackend(_NumbaBackend):
    name = "numba-loops"
    kernel = "loops"


class NumbaBackend(_NumbaBackend):
    """Register-tiled parallel kernel (see qkbench.backends.numba_kernels); `path` forces a geometry."""

    name = "numba"
    kernel = "blocked"

    def __init__(self, path: str | None = None) -> None:
        # Validated now, so a config naming an unknown path fails before anything runs.
        self._path = path
        self._geometry: numba_paths.Geometry | None = None
        if path not in (None, "auto"):
            numba_paths.select(path)  # raises, naming the known paths

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.geometry()  # detection reads llvmlite's host features: setup, not the first call
        return super().prepare(q, k)

    def geometry(self) -> numba_paths.Geometry:
        """The path in force: the option, else $QKBENCH_NUMBA_PATH, else the detected one.
        Chosen at the first call (detection imports Numba) and kept, out of the timed path."""
        if self._geometry is None:
            self._geometry = numba_paths.select(self._path)
        return self._geometry

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        if q.ndim == 4:  # an attention cell: this 2-D kernel per (batch, head) pair
            return numba_attention.scores(self, q, k)
        from qkbench.backends import numba_kernels

        n, d_k = q.shape
        m = k.shape[0]
        g = self.geometry()
        rows, width = g.rows, g.columns(q.dtype.itemsize)
        s = np.empty((n, m), dtype=q.dtype)
        qp = np.empty(((n + rows - 1) // rows, d_k, rows), dtype=q.dtype)
        kp = np.empty(((m + width - 1) // width, d_k, width), dtype=q.dtype)
        numba_kernels.call_with_slp(numba_kernels.blocked, q, k, qp, kp, s, g)
        return s

    def info(self) -> dict[str, Any]:
        cpu, _ = numba_paths.jit_target()
        return {**super().info(), "numba_path": self.geometry().name, "numba_cpu": cpu}
