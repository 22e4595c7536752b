"""Backend `numba-cuda`: the design card's Numba-JIT loops on an NVIDIA GPU, as a
shared-memory tiled kernel compiled by Numba's CUDA target (the `numba-cuda` package).

One thread block computes a TILE × TILE tile of S for one (batch, head). The block walks d_k
in TILE-wide slices: its threads load a Q tile and a K tile into shared memory side by side
(each thread one element, consecutive threads along d_k, so global reads coalesce), wait at a
barrier, and each thread adds TILE products to its entry. The K tile is padded by one column
so that the threads of a warp, which read different rows of it, hit different banks. Sums
run in float32 for float16 inputs and in the input precision otherwise. A grouped key head is
found by index; a tile wholly above a causal diagonal skips its loads.

Numba allocates device memory without a caching pool, so the output is allocated once per
cell in `prepare` and every call writes into it: an allocation per call would time cudaMalloc.

On a machine without a GPU the kernel runs in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1),
which is how its tests check it; the backend itself refuses to time the simulator.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import numpy as np

from qkbench.backends.attention_args import ALL_ATTENTION, check_heads, semantics
from qkbench.backends.base import Backend

TILE = 16  # 256 threads a block: a full tile of S with one thread per entry
cuda: Any = None  # numba.cuda, bound by _kernel() (see there why a global)
_KERNELS: dict[tuple[str, bool], Any] = {}


def _simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _kernel(accumulate: str) -> Any:
    """The kernel summing in `accumulate` ("float32" or "float64"), compiled on first use."""
    key = (accumulate, _simulated())
    if key in _KERNELS:
        return _KERNELS[key]
    import numba
    from numba import cuda as cuda_module

    # A module global, not a closure variable: the simulator swaps the kernel's global `cuda`
    # for its own thread-indexing stand-in, and in it the scalar types are NumPy's.
    globals()["cuda"] = cuda_module
    acc_type = getattr(np if _simulated() else numba, accumulate)

    @cuda_module.jit
    def scores_kernel(q, k, s, heads, kv_heads, causal, scale):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        bh = cuda.blockIdx.z
        row = cuda.blockIdx.y * TILE + ty  # query
        col = cuda.blockIdx.x * TILE + tx  # key
        key_row = cuda.blockIdx.x * TILE + ty  # the key this thread loads
        n = q.shape[1]
        m = k.shape[1]
        d_k = q.shape[2]
        kh = (bh // heads) * kv_heads + (bh % heads) // (heads // kv_heads)
        q_tile = cuda.shared.array((TILE, TILE), dtype=acc_type)
        k_tile = cuda.shared.array((TILE, TILE + 1), dtype=acc_type)
        acc = acc_type(0)
        slices = (d_k + TILE - 1) // TILE
        # The same for every thread of the block, so the barriers below are never split.
        if causal and cuda.blockIdx.x * TILE > cuda.blockIdx.y * TILE + TILE - 1 + (m - n):
            slices = 0
        for t in range(slices):
            d = t * TILE + tx
            if row < n and d < d_k:
                q_tile[ty, tx] = acc_type(q[bh, row, d])
            else:
                q_tile[ty, tx] = acc_type(0)
            if key_row < m and d < d_k:
                k_tile[ty, tx] = acc_type(k[kh, key_row, d])
            else:
                k_tile[ty, tx] = acc_type(0)
            cuda.syncthreads()
            for i in range(TILE):
                acc += q_tile[ty, i] * k_tile[tx, i]
            cuda.syncthreads()
        if row < n and col < m:
            if causal and col > row + (m - n):
                s[bh, row, col] = -math.inf
            else:
                s[bh, row, col] = acc * scale

    _KERNELS[key] = scores_kernel
    return scores_kernel


def as_3d(x: np.ndarray) -> np.ndarray:
    """(n, d) → (1, n, d); (B, H, n, d) → (B·H, n, d): one grid layer per (batch, head)."""
    return x[None] if x.ndim == 2 else x.reshape(-1, *x.shape[2:])


def launch(q3: Any, k3: Any, s3: Any, heads: int, kv_heads: int, causal: bool,
           scale: float, stream: Any = 0) -> None:
    """Queue the kernel for 3-D device (or, in the simulator, host) arrays."""
    accumulate = "float64" if q3.dtype == np.float64 else "float32"
    grid = (-(-k3.shape[1] // TILE), -(-q3.shape[1] // TILE), q3.shape[0])
    _kernel(accumulate)[grid, (TILE, TILE), stream](q3, k3, s3, heads, kv_heads, causal, scale)


def numba_cuda_scores(q: np.ndarray, k: np.ndarray, causal: bool = False,
                      scale: float = 1.0) -> np.ndarray:
    """S for host arrays, through the device (or the simulator): what the tests call."""
    from numba import cuda

    group = check_heads(q.shape, k.shape)
    q3, k3 = as_3d(np.ascontiguousarray(q)), as_3d(np.ascontiguousarray(k))
    heads = q.shape[1] if q.ndim == 4 else 1
    out = cuda.device_array((q3.shape[0], q3.shape[1], k3.shape[1]), dtype=q.dtype)
    launch(cuda.to_device(q3), cuda.to_device(k3), out, heads, heads // group, causal, scale)
    cuda.synchronize()
    return out.copy_to_host().reshape(*q.shape[:-1], k.shape[-2])


class NumbaCudaClock:
    """CUDA events on Numba's default stream (where `scores` launches), and the L2 flush
    by a kernel writing twice the L2. Numba has no graph capture: `capture` says so."""

    name = "cuda-events"

    def __init__(self, cache_bytes: int) -> None:
        from numba import cuda

        self._cuda = cuda
        self._begin, self._end = cuda.event(timing=True), cuda.event(timing=True)
        self._scratch = cuda.device_array(2 * cache_bytes, dtype=np.int8)

    def start(self) -> None:
        self._begin.record()

    def stop(self) -> None:
        self._end.record()

    def elapsed_s(self) -> float:
        self._end.synchronize()
        return self._cuda.event_elapsed_time(self._begin, self._end) / 1e3

    def flush(self) -> None:
        _fill_kernel()[-(-self._scratch.size // 256), 256](self._scratch)

    def capture(self, block: Any) -> None:
        return None


def _fill_kernel() -> Any:
    if "fill" not in _KERNELS:
        from numba import cuda

        @cuda.jit
        def fill(buffer):
            i = cuda.grid(1)
            if i < buffer.size:
                buffer[i] = 1

        _KERNELS["fill"] = fill  # type: ignore[index]
    return _KERNELS["fill"]  # type: ignore[index]


class NumbaCudaBackend(Backend):
    name = "numba-cuda"
    device = "gpu"
    dtypes = ("float16", "float32", "float64")  # Numba's CUDA target has no bfloat16
    attention = ALL_ATTENTION

    def __init__(self) -> None:
        self._out: Any = None
        self._shape: tuple[int, ...] = ()

    def unavailable(self) -> str | None:
        if _simulated():
            return ("NUMBA_ENABLE_CUDASIM=1 is set: Numba's CUDA simulator runs on the CPU "
                    "and is not a GPU to time")
        if importlib.util.find_spec("numba_cuda") is None:
            return "numba-cuda is not installed (pip install 'qkbench[numba-cuda]')"
        try:
            from numba import cuda

            if not cuda.is_available():
                return "numba-cuda sees no CUDA GPU (no driver, or no device)"
        except Exception as exc:
            return f"numba-cuda cannot start: {type(exc).__name__}: {exc}"
        return None

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        from numba import cuda

        self._group = check_heads(q.shape, k.shape)
        self._heads = q.shape[1] if q.ndim == 4 else 1
        self._shape = (*q.shape[:-1], k.shape[-2])
        self._wanted = semantics(self)
        q3, k3 = as_3d(np.ascontiguousarray(q)), as_3d(np.ascontiguousarray(k))
        if self._out is None or self._out.shape != (q3.shape[0], q3.shape[1], k3.shape[1]):
            self._out = cuda.device_array((q3.shape[0], q3.shape[1], k3.shape[1]),
                                          dtype=q.dtype)
        return cuda.to_device(q3), cuda.to_device(k3)

    def scores(self, q: Any, k: Any) -> Any:
        wanted = self._wanted
        launch(q, k, self._out, self._heads, self._heads // self._group, wanted.causal,
               wanted.scale)
        return self._out

    def sync(self) -> None:
        from numba import cuda

        cuda.synchronize()

    def to_numpy(self, s: Any) -> np.ndarray:
        return s.copy_to_host().reshape(self._shape)

    def cleanup(self) -> None:
        self._out = None  # the cell's output goes with the cell

    def cache_bytes(self) -> int | None:
        from numba import cuda

        return int(getattr(cuda.get_current_device(), "L2_CACHE_SIZE", 0)) or None

    def device_clock(self) -> Any:
        from qkbench.backends.gpu_support import FALLBACK_L2_BYTES

        return NumbaCudaClock(self.cache_bytes() or FALLBACK_L2_BYTES)

    def device_memory(self) -> tuple[int, int] | None:
        from numba import cuda

        free, total = cuda.current_context().get_memory_info()
        return int(free), int(total)

    def info(self) -> dict[str, Any]:
        import numba
        from numba import cuda

        name = cuda.get_current_device().name
        return {"library_version": numba.__version__,
                "device_name": name.decode() if isinstance(name, bytes) else str(name)}

    def telemetry(self) -> dict[str, float]:
        from qkbench.backends.gpu_support import nvml_telemetry

        return nvml_telemetry(0)
