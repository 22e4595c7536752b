"""The backend protocol: what every backend (built-in or plugin) implements.

A backend turns host NumPy inputs into its own arrays (`prepare`, not timed), computes the
scores S = Q·Kᵀ on them (`scores`, timed), waits for queued device work (`sync`) and hands
the result back as a host array (`to_numpy`, not timed in the kernel phase).

Only `scores` is required; everything else has a default suited to a synchronous CPU
library, so a plugin can be ten lines:

    class MyBackend(Backend):
        name = "mylib"
        dtypes = ("float32",)

        def scores(self, q, k):
            return mylib.matmul(q, mylib.transpose(k))

Constructors must be cheap and must not import heavy libraries: the harness instantiates a
backend in the main process to validate a config, and imports the library only inside the
worker process that runs it (see `qkbench.measure.worker`). Options given in a config are passed to
the constructor as keyword arguments.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Every dtype a cell may ask for, and the unit roundoff of each (used by the agreement bound).
KNOWN_DTYPES = ("float16", "bfloat16", "float32", "float64")
DEVICES = ("cpu", "gpu")


class Backend:
    """Base class with defaults for everything except `scores`."""

    #: Stable identifier, ``library[-variant][-device]`` style: "numpy", "torch-cpu", ...
    name: str = ""
    #: "cpu" or "gpu": which side of a CPU-vs-GPU comparison the backend is on.
    device: str = "cpu"
    #: The dtypes this backend computes in; cells of other dtypes are recorded as skipped.
    dtypes: tuple[str, ...] = ("float32", "float64")

    def __init__(self, **options: Any) -> None:
        if options:
            unknown = ", ".join(sorted(options))
            raise TypeError(f"{type(self).__name__} takes no options (got {unknown})")

    def unavailable(self) -> str | None:
        """Why this backend cannot run on this machine (missing package, no GPU), or None."""
        return None

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        """Host arrays (already in the cell's dtype) in, the backend's own arrays out."""
        return q, k

    def scores(self, q: Any, k: Any) -> Any:
        """Return S = q·kᵀ for prepared inputs. This is the timed call; it may be asynchronous."""
        raise NotImplementedError

    def sync(self) -> None:
        """Wait until all work queued by `scores` has finished (a no-op for synchronous code)."""

    def to_numpy(self, s: Any) -> np.ndarray:
        """The result of `scores` as a host NumPy array."""
        return np.asarray(s)

    def info(self) -> dict[str, Any]:
        """Facts worth recording with each row (library version, threads in force, ...)."""
        return {}

    def set_threads(self, count: int | None) -> None:
        """Compute with `count` threads from now on; None restores the library's default.

        The default limits every BLAS and OpenMP thread pool loaded in this (worker) process
        through threadpoolctl; libraries with pools of their own (Numba, PyTorch) override it.
        """
        from threadpoolctl import threadpool_limits

        previous = getattr(self, "_thread_limits", None)
        if previous is not None:
            previous.restore_original_limits()
            self._thread_limits = None
        if count is not None:
            self._thread_limits = threadpool_limits(limits=count)

    def precision(self, dtype: str) -> str:
        """The precision a dtype is computed in: the dtype itself, unless the backend computes
        in less (a TF32 variant returns "tf32" for float32; rows record it and the agreement
        bound uses its unit roundoff)."""
        return dtype

    def cache_bytes(self) -> int | None:
        """Size of the last cache level the backend's data passes through, for cold-cache runs;
        None means the host CPU's last-level cache (right for CPU backends)."""
        return None

    # ------------------------------------------------------------------ device hooks
    # Optional; the defaults suit a CPU library. GPU backends override them.

    def device_memory(self) -> tuple[int, int] | None:
        """(free, total) bytes of device memory, so a cell that cannot fit is skipped rather
        than failing; None for host memory (the harness checks that itself)."""
        return None

    def reset_peak_memory(self) -> None:
        """Start counting peak device memory for a new cell."""

    def peak_memory_bytes(self) -> int | None:
        """Peak device memory since `reset_peak_memory`, or None when not tracked."""
        return None

    def telemetry(self) -> dict[str, float]:
        """Clock, temperature, power now (keys: sm_clock_mhz, temperature_c, power_w), read at
        the start and the end of each cell so throttling shows; {} when unknown."""
        return {}

    def cleanup(self) -> None:
        """Undo per-cell global settings (TF32 mode, ...) after a cell."""

    def device_clock(self) -> Any:
        """A `qkbench.measure.timing.DeviceClock` (CUDA events on the stream `scores` runs
        on, an L2 flush, graph capture) for timing on the device, or None: the host clock
        around `sync()` times the block. Called in the worker after `prepare`."""
        return None


def missing_package_reason(module: str, extra: str) -> str | None:
    """The 'why not' for a backend whose library is not importable, or None if it is."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install 'qkbench[{extra}]')"
    return None
