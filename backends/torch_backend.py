"""Backends on PyTorch: `torch-cpu` (CPU tensors sharing memory with the NumPy inputs),
`torch-cuda` and `torch-cuda-tf32` (NVIDIA GPUs), `torch-mps` (Apple GPUs).

Attention cells are one batched matmul on every device: Q (B, H, n, d_k) viewed as
(B, H_kv, H/H_kv·n, d_k), the query heads of a group stacked, against K (B, H_kv, m, d_k), so
K is never repeated (what torch.repeat_interleave or expand + reshape would do); the result is
viewed back as S (B, H, n, m), then scaled and masked in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qkbench.backends.base import ATTENTION_FEATURES, Backend, missing_package_reason


def torch_from_numpy(array: np.ndarray) -> Any:
    """A CPU tensor sharing memory with `array`; bfloat16 (from ml_dtypes) goes via its bits,
    since torch.from_numpy does not know ml_dtypes."""
    import torch

    array = np.ascontiguousarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _tensor_to_numpy(s: Any) -> np.ndarray:
    import torch

    s = s.detach().cpu()
    if s.dtype == torch.bfloat16:
        import ml_dtypes

        return s.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return s.numpy()


class _TorchBackend(Backend):
    """What every PyTorch backend shares: the product, and the way back to NumPy."""

    attention = frozenset(ATTENTION_FEATURES)
    _mask: Any = None

    def unavailable(self) -> str | None:
        return missing_package_reason("torch", "torch")

    def load(self) -> None:
        import torch  # noqa: F401  (a second or more: start-up, overlapped across workers)

    def _attention_layout(self, q: Any, k: Any) -> tuple[Any, Any]:
        """Tensors already on the device → the layout `scores` wants: for attention cells, the
        query heads of each key head stacked (a view) and the causal mask on the device."""
        import torch

        problem, self._mask = self.problem, None
        if q.dim() == 4:
            batch, heads, n, d_k = q.shape
            q = q.reshape(batch, k.shape[1], heads // k.shape[1] * n, d_k)
        if problem is not None and problem.causal:
            self._mask = torch.from_numpy(problem.masked()).to(q.device)
        return q, k

    def scores(self, q: Any, k: Any) -> Any:
        import torch

        if q.dim() == 2:
            return torch.matmul(q, k.t())
        problem = self.problem
        s = torch.matmul(q, k.transpose(-1, -2)).view(problem.s_shape())
        if problem.scaled:
            s.mul_(problem.scale)
        if self._mask is not None:
            s.masked_fill_(self._mask, float("-inf"))
        return s

    def to_numpy(self, s: Any) -> np.ndarray:
        return _tensor_to_numpy(s)

    def info(self) -> dict[str, Any]:
        import torch

        facts: dict[str, Any] = {"library_version": torch.__version__}
        if self.problem is not None and "grouped" in self.problem.needs():
            facts["kv_materialised"] = False
        return facts


class TorchCpuBackend(_TorchBackend):
    name = "torch-cpu"
    device = "cpu"
    dtypes = ("float16", "bfloat16", "float32", "float64")

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        # from_numpy shares memory, so prepare costs no copy; contiguity keeps matmul on BLAS.
        return self._attention_layout(torch_from_numpy(q), torch_from_numpy(k))

    def info(self) -> dict[str, Any]:
        import torch

        return {**super().info(), "threads": torch.get_num_threads()}

    def set_threads(self, count: int | None) -> None:
        import torch

        if not hasattr(self, "_default_threads"):
            self._default_threads = torch.get_num_threads()
        torch.set_num_threads(self._default_threads if count is None else count)


class TorchCudaBackend(_TorchBackend):
    """torch.matmul on CUDA tensors, float32 computed in full float32 (TF32 off).

    PyTorch may compute float32 matmuls in TF32 on Ampere and newer GPUs, which is 2^13 times
    less precise; this backend turns TF32 off before its first matmul (PyTorch's switch and
    NVIDIA_TF32_OVERRIDE=0 for cuBLAS) and restores PyTorch's setting after each cell. The
    `torch-cuda-tf32` variant allows TF32 and says so: its float32 rows have precision tf32.
    """

    name = "torch-cuda"
    device = "gpu"
    dtypes = ("float16", "bfloat16", "float32", "float64")
    allow_tf32 = False

    def unavailable(self) -> str | None:
        missing = super().unavailable()
        if missing:
            return missing
        import torch

        if torch.version.cuda is None:
            return f"torch {torch.__version__} is a build without CUDA (a CPU-only wheel)"
        if not torch.cuda.is_available():
            return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU"
        return None

    def precision(self, dtype: str) -> str:
        return "tf32" if dtype == "float32" and self.allow_tf32 else dtype

    def _set_tf32(self) -> None:
        import torch
        from qkbench.backends.gpu_support import allow_tf32_again, forbid_tf32_everywhere

        # Before the first matmul creates the cuBLAS handle, which reads the override.
        (allow_tf32_again if self.allow_tf32 else forbid_tf32_everywhere)()
        matmul = torch.backends.cuda.matmul
        if not hasattr(self, "_saved_tf32"):
            self._saved_tf32 = matmul.allow_tf32
        matmul.allow_tf32 = self.allow_tf32

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        self._set_tf32()
        return self._attention_layout(torch_from_numpy(q).to("cuda", non_blocking=False),
                                      torch_from_numpy(k).to("cuda", non_blocking=False))

    def sync(self) -> None:
        import torch

        torch.cuda.synchronize()

    def pending(self) -> bool | None:
        import torch

        return not torch.cuda.current_stream().query()

    def cleanup(self) -> None:
        import torch

        if hasattr(self, "_saved_tf32"):
            torch.backends.cuda.matmul.allow_tf32 = self._saved_tf32
            del self._saved_tf32

    def info(self) -> dict[str, Any]:
        import torch

        return {**super().info(), "device_name": torch.cuda.get_device_name()}

    def cache_bytes(self) -> int | None:
        import torch

        return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)) or None

    def device_clock(self) -> Any:
        from qkbench.backends.gpu_support import TorchCudaClock

        return TorchCudaClock(self.cache_bytes())

    def device_memory(self) -> tuple[int, int] | None:
        import torch

        free, total = torch.cuda.mem_get_info()
        return int(free), int(total)

    def reset_peak_memory(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats()

    def peak_memory_bytes(self) -> int | None:
        import torch

        return int(torch.cuda.max_memory_allocated())

    def telemetry(self) -> dict[str, float]:
        import torch
        from qkbench.backends.gpu_support import nvml_telemetry

        return nvml_telemetry(torch.cuda.current_device())


class TorchCudaTf32Backend(TorchCudaBackend):
    """torch-cuda with TF32 allowed for float32: faster on tensor cores, 10-bit mantissa."""

    name = "torch-cuda-tf32"
    dtypes = ("float32",)
    allow_tf32 = True


class TorchMpsBackend(_TorchBackend):
    """torch.matmul on Apple GPUs through Metal (MPS). MPS has no float64."""

    name = "torch-mps"
    device = "gpu"
    dtypes = ("float16", "bfloat16", "float32")

    def unavailable(self) -> str | None:
        missing = super().unavailable()
        if missing:
            return missing
        import torch

        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_built():
            return f"torch {torch.__version__} was built without MPS (Apple GPU) support"
        if not mps.is_available():
            return f"torch {torch.__version__} sees no MPS device (not an Apple-silicon Mac?)"
        return None

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        return self._attention_layout(torch_from_numpy(q).to("mps"),
                                      torch_from_numpy(k).to("mps"))

    def sync(self) -> None:
        import torch

        torch.mps.synchronize()
