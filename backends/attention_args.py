"""What the compiled backends (JAX, torch.compile, Triton, Numba CUDA) read of a cell's problem.

The harness hands a backend an attention cell's semantics through `self.problem` (see
`Backend.attention` and `set_problem` in backends/base.py): the causal mask and the 1/√d_k
scale. Batch, heads and grouped key heads need no flag: they are the shapes of the 4-D arrays
(query head h reads key head h // (H / H_kv)). Read through getattr so that these backends also
run where no problem is set, as the plain 2-D product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What the compiled backends compute: every attention cell (see ATTENTION_FEATURES in base.py).
ALL_ATTENTION = frozenset({"batched", "grouped", "causal", "scaled"})


@dataclass(frozen=True)
class Semantics:
    causal: bool = False  # −inf where key j > query i + (m − n)
    scale: float = 1.0  # S = scale · Q·Kᵀ


def semantics(backend: Any) -> Semantics:
    problem = getattr(backend, "problem", None)
    if problem is None:
        return Semantics()
    return Semantics(causal=bool(getattr(problem, "causal", False)),
                     scale=float(getattr(problem, "scale", 1.0)))


def check_heads(q_shape: tuple[int, ...], k_shape: tuple[int, ...]) -> int:
    """Query heads per key head for 4-D inputs (1 for 2-D); ValueError on shapes that do not
    form attention (a kernel given them would read out of bounds)."""
    if len(q_shape) != len(k_shape) or len(q_shape) not in (2, 4):
        raise ValueError(f"q {q_shape} and k {k_shape} must both be 2-D or both 4-D")
    if q_shape[-1] != k_shape[-1]:
        raise ValueError(f"q {q_shape} and k {k_shape} differ in d_k")
    if len(q_shape) == 2:
        return 1
    if q_shape[0] != k_shape[0] or q_shape[1] % k_shape[1]:
        raise ValueError(f"q {q_shape} and k {k_shape}: batch differs or heads are not a "
                         "multiple of key heads")
    return q_shape[1] // k_shape[1]
