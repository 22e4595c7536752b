"""Backend `torch-cpu`: torch.matmul on CPU tensors that share memory with the NumPy inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.base import Backend, missing_package_reason


class TorchCpuBackend(Backend):
    name = "torch-cpu"
    device = "cpu"
    dtypes = ("float16", "float32", "float64")

    def unavailable(self) -> str | None:
        return missing_package_reason("torch", "torch")

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        import torch

        # from_numpy shares memory, so prepare costs no copy; contiguity keeps matmul on BLAS.
        return (torch.from_numpy(np.ascontiguousarray(q)),
                torch.from_numpy(np.ascontiguousarray(k)))

    def scores(self, q: Any, k: Any) -> Any:
        import torch

        return torch.matmul(q, k.t())

    def to_numpy(self, s: Any) -> np.ndarray:
        return s.numpy()

    def info(self) -> dict[str, Any]:
        import torch

        return {"library_version": torch.__version__, "threads": torch.get_num_threads()}

    def set_threads(self, count: int | None) -> None:
        import torch

        if not hasattr(self, "_default_threads"):
            self._default_threads = torch.get_num_threads()
        torch.set_num_threads(self._default_threads if count is None else count)
