"""What the CUDA backends share: NVML telemetry, the TF32 switches, out-of-memory recognition,
and the device clocks (CUDA events, L2 flush, graph capture) through PyTorch and CuPy.

Kept apart from the backends so that neither CuPy nor PyTorch is needed to read a GPU's clocks
(NVML comes from the small `nvidia-ml-py` package, optional: without it telemetry is empty).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any


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



class TorchCudaClock:
    """CUDA events, the L2 flush and graph capture through PyTorch, on its current stream.

    A `qkbench.measure.kernel_timer.DeviceClock` (duck-typed: the backends do not import the
    harness). Also serves every backend whose kernels run on PyTorch's stream (Triton,
    torch.compile)."""

    name = "cuda-events"

    def __init__(self, cache_bytes: int | None) -> None:
        import torch

        self._torch = torch
        self._begin = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._cache_bytes = cache_bytes or FALLBACK_L2_BYTES
        self._scratch = None

    def start(self) -> None:
        self._begin.record()

    def stop(self) -> None:
        self._end.record()

    def elapsed_s(self) -> float:
        self._end.synchronize()
        return self._begin.elapsed_time(self._end) / 1e3  # events count milliseconds

    def flush(self) -> None:
        if self._scratch is None:
            # Twice the L2: a write that large leaves none of the inputs cached, whatever the
            # replacement policy keeps. int8 so the size is exact in bytes.
            self._scratch = self._torch.empty(flush_bytes(self._cache_bytes),
                                              dtype=self._torch.int8, device="cuda")
        self._scratch.fill_(1)

    def capture(self, block):
        torch = self._torch
        # Capture needs a side stream and one warm run on it (allocator, library handles).
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            block()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            block()
        torch.cuda.synchronize()
        return graph.replay


class CupyClock:
    """CUDA events, the L2 flush and graph capture through CuPy, on its current stream."""

    name = "cuda-events"

    def __init__(self, cache_bytes: int | None) -> None:
        import cupy

        self._cupy = cupy
        self._begin, self._end = cupy.cuda.Event(), cupy.cuda.Event()
        self._cache_bytes = cache_bytes or FALLBACK_L2_BYTES
        self._scratch = None

    def start(self) -> None:
        self._begin.record()

    def stop(self) -> None:
        self._end.record()

    def elapsed_s(self) -> float:
        self._end.synchronize()
        return self._cupy.cuda.get_elapsed_time(self._begin, self._end) / 1e3

    def flush(self) -> None:
        if self._scratch is None:
            self._scratch = self._cupy.empty(flush_bytes(self._cache_bytes),
                                             dtype=self._cupy.int8)
        self._scratch.fill(1)

    def capture(self, block):
        cupy = self._cupy
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            block()  # warm: cuBLAS handle and pool blocks exist before capture
            stream.synchronize()
            stream.begin_capture()
            block()
            graph = stream.end_capture()
        stream.synchronize()

        def replay() -> None:
            # Launched on the current stream, where the events are recorded.
            graph.launch(cupy.cuda.get_current_stream())

        return replay


# When a library cannot tell the L2 size: larger than any GPU's L2 so far (H100/H200: 50-60 MB,
# B200: 126 MB), so the flush stays a full flush on a device that does not say.
FALLBACK_L2_BYTES = 128 << 20


def flush_bytes(cache_bytes: int) -> int:
    """The size of the write that flushes a cache of `cache_bytes`: twice it."""
    return 2 * int(cache_bytes)


def device_synchronizers() -> list[Callable[[], Any]]:
    """A device-wide synchronize for every CUDA library this process has initialised (torch,
    CuPy), for the check that a backend's sync() left nothing queued; empty where none has.
    A library that cannot answer has no device work of this process to wait for."""
    syncs: list[Callable[[], Any]] = []
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "cuda", None) is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_initialized():
                syncs.append(torch.cuda.synchronize)
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        with contextlib.suppress(Exception):
            cupy.cuda.runtime.getDevice()  # raises where CUDA cannot be set up
            syncs.append(cupy.cuda.runtime.deviceSynchronize)
    return syncs
