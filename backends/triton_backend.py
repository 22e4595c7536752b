"""Backend `triton`: S = Q·Kᵀ by a tiled Triton kernel written here, on NVIDIA GPUs.

Each program computes one BLOCK_N × BLOCK_M tile of S for one (batch, head): it walks d_k in
BLOCK_D slices, loading a Q tile and a Kᵀ tile and accumulating their `tl.dot` in float32
(float64 for float64 inputs), then scales, masks and stores the tile in the input dtype.
Grouped key heads cost nothing extra: the program for query head h reads key head
h // (H / H_kv) through its strides. Under a causal mask a tile that lies wholly above the
diagonal skips its loads and only writes −inf.

float32 dots ask for `input_precision="ieee"`: Triton's default for float32 is TF32, which
the agreement check would (rightly) fail. The kernel is launched on PyTorch's current stream,
so torch-cuda's CUDA events, L2 flush and graph capture time it.

On a machine without a GPU the kernel still runs through Triton's interpreter
(TRITON_INTERPRET=1, NumPy underneath) on CPU tensors: that is how its tests check it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from qkbench.backends.attention_args import ALL_ATTENTION, check_heads, semantics
from qkbench.backends.base import missing_package_reason
from qkbench.backends.torch_backend import TorchCudaBackend

# Tile sizes: 64 × 64 output tiles keep a float32 accumulator in registers with room for the
# operand tiles; tl.dot needs every tile side to be at least 16. float64 has no tensor-core
# path this wide on most GPUs, so its tiles are halved to stay out of local memory.
BLOCK_S = {"float64": 32}
DEFAULT_BLOCK_S = 64
MIN_DOT = 16
MAX_BLOCK_D = 64

_KERNELS: dict[bool, Any] = {}  # interpreted or compiled, by TRITON_INTERPRET at definition


def _kernel() -> Any:
    """The jitted kernel, defined on first use: Triton decides at definition whether it is
    interpreted, and the tests switch the interpreter on after this module is imported."""
    interpreted = _interpreted()
    if interpreted in _KERNELS:
        return _KERNELS[interpreted]
    import triton
    import triton.language as tl

    @triton.jit
    def scores_kernel(q_ptr, k_ptr, s_ptr, n, m, d_k, heads, group, scale,
                      sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_m, sk_d,
                      ss_b, ss_h, ss_n, ss_m,
                      CAUSAL: tl.constexpr, SCALED: tl.constexpr, F64: tl.constexpr,
                      UPCAST: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
        tile_n = tl.program_id(0)
        tile_m = tl.program_id(1)
        batch_head = tl.program_id(2)
        b = batch_head // heads
        h = batch_head % heads
        rows = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
        q_base = q_ptr + b * sq_b + h * sq_h
        k_base = k_ptr + b * sk_b + (h // group) * sk_h
        if F64:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float64)
        else:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        d_end = d_k
        if CAUSAL:
            # The tile's first key is past the last row's last visible key: nothing to sum.
            if tile_m * BLOCK_M > tile_n * BLOCK_N + BLOCK_N - 1 + (m - n):
                d_end = 0
        for d0 in range(0, d_end, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            q_tile = tl.load(q_base + rows[:, None] * sq_n + ds[None, :] * sq_d,
                             mask=(rows[:, None] < n) & (ds[None, :] < d_k), other=0.0)
            kt_tile = tl.load(k_base + cols[None, :] * sk_m + ds[:, None] * sk_d,
                              mask=(cols[None, :] < m) & (ds[:, None] < d_k), other=0.0)
            if UPCAST:
                q_tile = q_tile.to(tl.float32)
                kt_tile = kt_tile.to(tl.float32)
            acc = tl.dot(q_tile, kt_tile, acc, input_precision="ieee")
        if SCALED:
            acc = acc * scale
        if CAUSAL:
            acc = tl.where(cols[None, :] > rows[:, None] + (m - n), float("-inf"), acc)
        tl.store(s_ptr + b * ss_b + h * ss_h + rows[:, None] * ss_n + cols[None, :] * ss_m,
                 acc.to(s_ptr.dtype.element_ty), mask=(rows[:, None] < n) & (cols[None, :] < m))

    _KERNELS[interpreted] = scores_kernel
    return scores_kernel


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _next_power_of_two(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def triton_scores(q: Any, k: Any, causal: bool = False, scale: float = 1.0) -> Any:
    """S for torch tensors q, k (2-D, or (B, H, n, d) and (B, H_kv, m, d)) on one device."""
    import torch
    import triton

    group = check_heads(tuple(q.shape), tuple(k.shape))
    four_d = q.dim() == 4
    q4 = q if four_d else q[None, None]
    k4 = k if four_d else k[None, None]
    batch, heads, n, d_k = q4.shape
    m = k4.shape[2]
    s4 = torch.empty((batch, heads, n, m), dtype=q.dtype, device=q.device)
    block = BLOCK_S.get(str(q.dtype).removeprefix("torch."), DEFAULT_BLOCK_S)
    block_d = min(MAX_BLOCK_D, max(MIN_DOT, _next_power_of_two(d_k)))
    grid = (triton.cdiv(n, block), triton.cdiv(m, block), batch * heads)
    _kernel()[grid](q4, k4, s4, n, m, d_k, heads, group, scale,
                    *q4.stride(), *k4.stride(), *s4.stride(),
                    CAUSAL=causal, SCALED=scale != 1.0, F64=q.dtype == torch.float64,
                    # Triton's interpreter computes bfloat16 dots wrongly (3.9: errors of 1e10);
                    # bfloat16 products are exact in float32, so the upcast tiles give the same
                    # sums. Compiled kernels keep the bfloat16 tensor-core dot.
                    UPCAST=q.dtype == torch.bfloat16 and _interpreted(),
                    BLOCK_N=block, BLOCK_M=block, BLOCK_D=block_d)
    return s4 if four_d else s4[0, 0]


class TritonBackend(TorchCudaBackend):
    """The Triton kernel on CUDA tensors; everything else (transfers, TF32 switches for any
    library call, events, memory and telemetry) is torch-cuda's."""

    name = "triton"
    dtypes = ("float16", "bfloat16", "float32", "float64")
    attention = ALL_ATTENTION

    def unavailable(self) -> str | None:
        missing = missing_package_reason("triton", "triton")
        if missing:
            return missing
        no_gpu = super().unavailable()
        # Triton compiles for the GPU only (TRITON_INTERPRET=1 is for tests, not timing).
        return f"triton needs a CUDA GPU through a CUDA build of torch: {no_gpu}" if no_gpu else None

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        from qkbench.backends.torch_compile_backend import cuda_tensors

        check_heads(q.shape, k.shape)
        self._wanted = semantics(self)
        return cuda_tensors(self, q, k)  # 4-D as given: the kernel reads grouped heads itself

    def scores(self, q: Any, k: Any) -> Any:
        wanted = self._wanted
        return triton_scores(q, k, wanted.causal, wanted.scale)

    def info(self) -> dict[str, Any]:
        import triton

        return {**super().info(), "triton_version": triton.__version__}
