"""Backends `torch-compile-cpu` and `torch-compile-cuda`: S = Q·Kᵀ through `torch.compile`
(TorchDynamo capture, Inductor code generation).

Compilation happens at the first call of each cell, so it lands in `first_call_s`; each cell
starts from an empty compile cache (Dynamo is reset before it compiles), so that figure means
the same in every row. The compiled function is captured whole (`fullgraph=True`) for a static shape
(`dynamic=False`), and hitting Dynamo's recompile limit is an error rather than a silent fall
back to eager PyTorch: a row labelled torch-compile always timed compiled code.

The CUDA variant shares torch-cuda's device side: TF32 off for float32, CUDA events, the L2
flush, graph capture, memory and telemetry hooks.
"""

from __future__ import annotations

from typing import Any

from qkbench.backends.attention_args import ALL_ATTENTION, check_heads, semantics
from qkbench.backends.torch_backend import TorchCpuBackend, TorchCudaBackend, torch_from_numpy

# torch.compile's modes; "reduce-overhead" adds Inductor's own CUDA graphs.
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def attention_product(q: Any, k: Any, causal: bool, scale: float) -> Any:
    """The eager PyTorch computation that gets compiled (2-D, or 4-D with grouped heads)."""
    import torch

    if q.dim() == 2:
        s = torch.matmul(q, k.t())
    else:
        b, h, n, d = q.shape
        kv = k.shape[1]
        # Grouped heads as a broadcast axis: K is read once per key head, never copied.
        s = torch.matmul(q.view(b, kv, h // kv, n, d),
                         k.unsqueeze(2).transpose(-2, -1)).view(b, h, n, k.shape[2])
    if scale != 1.0:
        s = s * scale
    if causal:
        n, m = s.shape[-2], s.shape[-1]
        rows = torch.arange(n, device=s.device)[:, None]
        cols = torch.arange(m, device=s.device)[None, :]
        s = s.masked_fill(cols > rows + (m - n), float("-inf"))
    return s


def cuda_tensors(backend: TorchCudaBackend, q: Any, k: Any) -> tuple[Any, Any]:
    """Host arrays → CUDA tensors of the same shape, TF32 switched as the backend says (before
    the first matmul): for backends that take torch-cuda's device side but not its layout."""
    backend._set_tf32()
    return torch_from_numpy(q).to("cuda"), torch_from_numpy(k).to("cuda")


class _Compiled:
    """What both variants add to their eager PyTorch backend: the compiled product."""

    attention = ALL_ATTENTION

    def _init_compile(self, mode: str) -> None:
        if mode not in MODES:
            raise TypeError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self._compiled: Any = None

    def _compile(self, q: Any, k: Any) -> Any:
        """Wrap the product for this cell (compiled at its first call, not here)."""
        import torch
        import torch._dynamo.config as dynamo

        check_heads(tuple(q.shape), tuple(k.shape))
        # Dynamo caches per code object, and every instance compiles the same `product`: an
        # empty cache makes this a compilation of its own (first_call_s holds all of it),
        # and a process that compiles many shapes never reaches the recompile limit.
        torch._dynamo.reset()
        dynamo.fail_on_recompile_limit_hit = True
        wanted = semantics(self)

        def product(a: Any, b: Any) -> Any:
            return attention_product(a, b, wanted.causal, wanted.scale)

        self._compiled = torch.compile(product, mode=self.mode, dynamic=False, fullgraph=True)
        return self._compiled

    def scores(self, q: Any, k: Any) -> Any:
        return (self._compiled or self._compile(q, k))(q, k)

    def _reset_compile(self) -> None:
        self._compiled = None  # the next cell compiles afresh: first_call_s holds it

    def _compile_info(self) -> dict[str, Any]:
        return {"compile_mode": self.mode}


class TorchCompileCpuBackend(_Compiled, TorchCpuBackend):
    name = "torch-compile-cpu"

    def __init__(self, mode: str = "default") -> None:
        self._init_compile(mode)

    def prepare(self, q: Any, k: Any) -> tuple[Any, Any]:
        # The arrays as they are (4-D for attention cells): the compiled product does its own
        # grouping, whatever layout eager torch-cpu prefers.
        return torch_from_numpy(q), torch_from_numpy(k)

    def cleanup(self) -> None:
        self._reset_compile()
        super().cleanup()

    def info(self) -> dict[str, Any]:
        return {**super().info(), **self._compile_info()}


class TorchCompileCudaBackend(_Compiled, TorchCudaBackend):
    name = "torch-compile-cuda"

    def __init__(self, mode: str = "default") -> None:
        self._init_compile(mode)

    def prepare(self, q: Any, k: Any) -> tuple[Any, Any]:
        return cuda_tensors(self, q, k)

    def cleanup(self) -> None:
        self._reset_compile()
        super().cleanup()

    def info(self) -> dict[str, Any]:
        return {**super().info(), **self._compile_info()}
