"""What the CUDA backends share: NVML telemetry and a precise 'why not' for a missing GPU.

Kept apart from the backends so that neither CuPy nor PyTorch is needed to read a GPU's clocks
(NVML comes from the small `nvidia-ml-py` package, optional: without it telemetry is empty).
"""

from __future__ import annotations

import os


def nvml_telemetry(device_index: int = 0) -> dict[str, float]:
    """SM clock (MHz), temperature (°C) and power draw (W) of one GPU, or {} without NVML."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        return {
            "sm_clock_mhz": float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            "temperature_c": float(pynvml.nvmlDeviceGetTemperature(
                handle, pynvml.NVML_TEMPERATURE_GPU)),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
        }
    except Exception:  # NVML errors (no driver, no permission) must never fail a cell
        return {}


def forbid_tf32_everywhere() -> None:
    """Make NVIDIA's libraries compute float32 in float32 in this process, whatever the
    framework asks: read by cuBLAS when its handle is created, so call before the first matmul.
    Each backend runs in its own worker process, so this never reaches another backend."""
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"


def allow_tf32_again() -> None:
    os.environ.pop("NVIDIA_TF32_OVERRIDE", None)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA out-of-memory errors of any library (torch.cuda.OutOfMemoryError,
    cupy.cuda.memory.OutOfMemoryError, ...), recognised without importing them."""
    name = type(exc).__name__
    return "OutOfMemory" in name or "out of memory" in str(exc).lower()

