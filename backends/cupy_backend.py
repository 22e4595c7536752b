"""Backends `cupy` and `cupy-tf32`: `q @ k.T` on CUDA arrays through CuPy (cuBLAS).

CuPy computes float32 matmuls in TF32 only when asked (CUPY_TF32=1, read at the first float32
matmul); `cupy` additionally sets NVIDIA_TF32_OVERRIDE=0 before CuPy creates its cuBLAS handle,
so its float32 rows are full float32 whatever the environment says. `cupy-tf32` asks for TF32
and records precision tf32. Both run in worker processes of their own, so these process-wide
settings never reach another backend. CuPy has no bfloat16 matmul.

Attention cells as in `numpy`: one broadcast matmul of Q viewed as (B, H_kv, H/H_kv·n, d_k)
against K (B, H_kv, m, d_k), K never repeated; scale and mask in place on the device.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from qkbench.backends.base import ATTENTION_FEATURES, Backend


class CupyBackend(Backend):
    name = "cupy"
    device = "gpu"
    dtypes = ("float16", "float32", "float64")
    allow_tf32 = False
    attention = frozenset(ATTENTION_FEATURES)
    _mask: Any = None

    def unavailable(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("cupy") is None:
            return "cupy is not installed (pip install 'qkbench[cupy]', a cupy-cudaXXx wheel)"
        try:
            import cupy
        except Exception as exc:  # CUDA libraries missing or mismatched
            return f"cupy cannot be imported: {type(exc).__name__}: {exc}"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver: cudaErrorNoDevice, cudaErrorInsufficientDriver
            return f"cupy {cupy.__version__} sees no usable CUDA GPU ({exc})"
        if count == 0:
            return f"cupy {cupy.__version__} sees no CUDA GPU"
        return None

    def _configure_tf32(self) -> None:
        from qkbench.backends.gpu_support import allow_tf32_again, forbid_tf32_everywhere

        os.environ["CUPY_TF32"] = "1" if self.allow_tf32 else "0"
        (allow_tf32_again if self.allow_tf32 else forbid_tf32_everywhere)()

    def precision(self, dtype: str) -> str:
        return "tf32" if dtype == "float32" and self.allow_tf32 else dtype

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        import cupy

        self._configure_tf32()  # before the first matmul initialises cuBLAS
        q, k = cupy.asarray(np.ascontiguousarray(q)), cupy.asarray(np.ascontiguousarray(k))
        problem, self._mask = self.problem, None
        if q.ndim == 4:
            # The query heads that share a key head, stacked: a view of the contiguous q.
            batch, heads, n, d_k = q.shape
            q = q.reshape(batch, k.shape[1], heads // k.shape[1] * n, d_k)
        if problem is not None and problem.causal:
            self._mask = cupy.asarray(problem.masked())
            # A 0-d device array, not a Python float: copyto's `where` form wants an array.
            self._minus_inf = cupy.full((), -np.inf, dtype=q.dtype)
        return q, k

    def scores(self, q: Any, k: Any) -> Any:
        if q.ndim == 2:
            return q @ k.T
        import cupy

        problem = self.problem
        s = cupy.matmul(q, k.swapaxes(-1, -2)).reshape(problem.s_shape())
        if problem.scaled:
            s *= s.dtype.type(problem.scale)
        if self._mask is not None:
            cupy.copyto(s, self._minus_inf, where=self._mask)  # (n, m) mask, broadcast
        return s

    def sync(self) -> None:
        import cupy

        cupy.cuda.get_current_stream().synchronize()

    def pending(self) -> bool | None:
        import cupy

        return not cupy.cuda.get_current_stream().done

    def to_numpy(self, s: Any) -> np.ndarray:
        import cupy

        return cupy.asnumpy(s)

    def info(self) -> dict[str, Any]:
        import cupy

        device = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
        facts: dict[str, Any] = {
            "library_version": cupy.__version__,
            "device_name": name.decode() if isinstance(name, bytes) else str(name)}
        if self.problem is not None and "grouped" in self.problem.needs():
            facts["kv_materialised"] = False
        return facts

    def cache_bytes(self) -> int | None:
        import cupy

        size = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id).get("l2CacheSize")
        return int(size) if size else None

    def device_clock(self) -> Any:
        from qkbench.backends.gpu_support import CupyClock

        return CupyClock(self.cache_bytes())

    def device_memory(self) -> tuple[int, int] | None:
        import cupy

        free, total = cupy.cuda.runtime.memGetInfo()
        # Blocks CuPy's pool holds but does not use are free for this cell too.
        pool = cupy.get_default_memory_pool()
        return int(free + pool.free_bytes()), int(total)

    def reset_peak_memory(self) -> None:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()

    def peak_memory_bytes(self) -> int | None:
        import cupy

        # The pool keeps every block it allocated during the cell: its size is the peak.
        return int(cupy.get_default_memory_pool().total_bytes())

    def telemetry(self) -> dict[str, float]:
        import cupy
        from qkbench.backends.gpu_support import nvml_telemetry

        return nvml_telemetry(cupy.cuda.Device().id)


class CupyTf32Backend(CupyBackend):
    """cupy with TF32 allowed for float32 (tensor cores, 10-bit mantissa), recorded as tf32."""

    name = "cupy-tf32"
    dtypes = ("float32",)
    allow_tf32 = True
