"""Backends `jax-cpu` and `jax-cuda`: S = Q·Kᵀ as one `jax.jit`-compiled XLA computation.

Compilation happens at the first call of each shape and dtype, so it lands in `first_call_s`
like any JIT; the samples time the compiled executable. JAX dispatches asynchronously: `scores`
returns at once and `sync` blocks on the last result it returned.

Precision: on NVIDIA GPUs XLA computes float32 dots in TF32 unless asked otherwise, so the dot
asks for `Precision.HIGHEST` (full float32) and float32 rows are held to the float32 bound.
float64 needs JAX's x64 mode, switched on in the worker process before any array exists.

jax-cuda has no CUDA events the harness can reach (XLA owns its streams), so its samples come
from the host clock around `block_until_ready`, and its rows say `clock: host`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from qkbench.backends.attention_args import ALL_ATTENTION, check_heads, semantics
from qkbench.backends.base import Backend, missing_package_reason


def _product(q: Any, k: Any, causal: bool, scale: float) -> Any:
    """The traced computation: 2-D, or (B, H, n, d) × (B, H_kv, m, d) with grouped heads."""
    import jax.numpy as jnp
    from jax import lax

    highest = lax.Precision.HIGHEST
    if q.ndim == 2:
        s = jnp.matmul(q, k.T, precision=highest)
    else:
        b, h, n, d = q.shape
        kv = k.shape[1]
        # Grouped heads without copying K: the query heads of one key head form an axis.
        grouped = q.reshape(b, kv, h // kv, n, d)
        s = jnp.einsum("bgrnd,bgmd->bgrnm", grouped, k, precision=highest).reshape(b, h, n, -1)
    if scale != 1.0:
        s = s * jnp.asarray(scale, dtype=s.dtype)
    if causal:
        n, m = s.shape[-2], s.shape[-1]
        masked = jnp.arange(m)[None, :] > jnp.arange(n)[:, None] + (m - n)
        s = jnp.where(masked, jnp.asarray(-jnp.inf, dtype=s.dtype), s)
    return s


def _jax() -> Any:
    """Import JAX for this worker process. By default its GPU client takes 75% of the device's
    memory at start, which would leave the other backends' workers (processes of their own
    on the same GPU) too little: it allocates as it goes instead, unless the user said."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    return jax


class _JaxBackend(Backend):
    dtypes = ("float16", "bfloat16", "float32", "float64")
    attention = ALL_ATTENTION
    platform = "cpu"  # jax.devices() platform name

    def __init__(self) -> None:
        self._compiled: Any = None
        self._last: Any = None

    def unavailable(self) -> str | None:
        missing = missing_package_reason("jax", "jax")
        if missing:
            return missing
        jax = _jax()
        try:
            jax.devices(self.platform)
        except RuntimeError:  # "Unknown backend: 'gpu' requested, but no platforms ..."
            present = ", ".join(sorted({d.platform for d in jax.devices()}))
            hint = (" (pip install 'qkbench[gpu]' brings jax[cuda12])"
                    if self.platform == "gpu" else "")
            return f"jax {jax.__version__} sees no {self.platform} device, only: {present}{hint}"
        return None

    def _device(self) -> Any:
        import jax

        return jax.devices(self.platform)[0]

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        jax = _jax()
        if q.dtype == np.float64:
            # Without x64 mode JAX silently turns float64 into float32.
            jax.config.update("jax_enable_x64", True)
        check_heads(q.shape, k.shape)
        wanted = semantics(self)
        self._compiled = jax.jit(lambda a, b: _product(a, b, wanted.causal, wanted.scale))
        device = self._device()
        return jax.device_put(q, device), jax.device_put(k, device)

    def scores(self, q: Any, k: Any) -> Any:
        self._last = self._compiled(q, k)
        return self._last

    def sync(self) -> None:
        if self._last is not None:
            self._last.block_until_ready()

    def to_numpy(self, s: Any) -> np.ndarray:
        return np.asarray(s)

    def info(self) -> dict[str, Any]:
        import jax

        return {"library_version": jax.__version__,
                "device_name": str(getattr(self._device(), "device_kind", self.platform))}


class JaxCpuBackend(_JaxBackend):
    name = "jax-cpu"
    device = "cpu"
    platform = "cpu"


class JaxCudaBackend(_JaxBackend):
    name = "jax-cuda"
    device = "gpu"
    platform = "gpu"

    def cache_bytes(self) -> int | None:
        from qkbench.backends.gpu_support import FALLBACK_L2_BYTES

        # XLA does not say; cold cells rotate copies sized for an L2 larger than any so far.
        return FALLBACK_L2_BYTES

    def device_memory(self) -> tuple[int, int] | None:
        stats = self._device().memory_stats() or {}
        limit, used = stats.get("bytes_limit"), stats.get("bytes_in_use", 0)
        return (int(limit - used), int(limit)) if limit else None
