"""Backends that compute float32 in TF32 and claim float32: the agreement check must fail them.

`SilentTf32Cpu` emulates TF32 on any CPU (inputs rounded to TF32's 10-bit mantissa, then a
float32 product, which is what tensor cores do); `SilentTf32TorchCuda` is torch-cuda with
TF32 switched on behind a float32 label, for the device check on a real GPU.
"""

from __future__ import annotations

import numpy as np

from qkbench.backends.base import Backend
from qkbench.backends.torch_backend import TorchCudaBackend


def round_to_tf32(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to nearest with 10 mantissa bits (13 of 23 dropped)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


class SilentTf32Cpu(Backend):
    name = "silent-tf32-cpu"
    dtypes = ("float32",)

    def scores(self, q, k):
        return round_to_tf32(q) @ round_to_tf32(k).T


class SilentTf32TorchCuda(TorchCudaBackend):
    name = "silent-tf32-torch-cuda"
    dtypes = ("float32",)
    allow_tf32 = True

    def precision(self, dtype: str) -> str:
        return dtype  # the lie under test: TF32 arithmetic, float32 label
