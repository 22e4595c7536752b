"""Backends that are wrong in one specific way each, to test agreement and isolation.

Each is a real plugin class, loaded by import path ("tests.plugins.misbehaving:Name") in a
worker process exactly like a third-party backend.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from qkbench.backends.base import Backend


class _NumpyLike(Backend):
    dtypes = ("float32", "float64")

    def scores(self, q, k):
        return q @ k.T


class Good(_NumpyLike):
    name = "good-plugin"


class WrongShape(_NumpyLike):
    name = "wrong-shape"

    def scores(self, q, k):
        return (q @ k.T)[:, :-1]


class WrongDtype(_NumpyLike):
    name = "wrong-dtype"

    def scores(self, q, k):
        return q.astype(np.float64) @ k.astype(np.float64).T


class NotAnArray(_NumpyLike):
    name = "not-an-array"

    def scores(self, q, k):
        return (q @ k.T).tolist()

    def to_numpy(self, s):
        return s  # a list of lists, not an ndarray


class ReturnsNaN(_NumpyLike):
    name = "returns-nan"

    def scores(self, q, k):
        s = q @ k.T
        s[s.shape[0] // 2, s.shape[1] // 2] = np.nan
        return s


class OffByConstant(_NumpyLike):
    """Adds a constant far below the size of the entries, but far above rounding error."""

    name = "off-by-constant"

    def scores(self, q, k):
        return q @ k.T + q.dtype.type(1e-3)


class TransposedIndexing(_NumpyLike):
    """Wrong but plausible: the same values in the wrong places (as from swapped indices)."""

    name = "transposed"

    def scores(self, q, k):
        return np.ascontiguousarray((q @ k.T).T)


class Raises(_NumpyLike):
    name = "raises"

    def scores(self, q, k):
        raise RuntimeError("kernel launch failed on purpose")


class Hangs(_NumpyLike):
    name = "hangs"

    def scores(self, q, k):
        time.sleep(3600)


class HangsWhileSampling(_NumpyLike):
    """Agrees on its first call, then hangs after 40 calls: a timeout in the middle of timing.
    Each call takes 2 ms, so calibration settles on one call per sample and ends quickly."""

    name = "hangs-later"
    calls = 0

    def scores(self, q, k):
        type(self).calls += 1
        time.sleep(3600 if type(self).calls > 40 else 0.002)
        return q @ k.T


class Segfaults(_NumpyLike):
    name = "segfaults"

    def scores(self, q, k):
        os.kill(os.getpid(), signal.SIGSEGV)


class Aborts(_NumpyLike):
    name = "aborts"

    def scores(self, q, k):
        os.abort()


class Exits(_NumpyLike):
    name = "exits"

    def prepare(self, q, k):
        os._exit(3)


class RunsOutOfMemory(_NumpyLike):
    name = "out-of-memory"

    def prepare(self, q, k):
        raise MemoryError


class UnavailableRaises(_NumpyLike):
    name = "unavailable-raises"

    def unavailable(self):
        raise RuntimeError("driver query failed")


class NotHere(_NumpyLike):
    name = "not-here"

    def unavailable(self):
        return "needs the imaginary QPU-9000"


class Float32Only(_NumpyLike):
    name = "float32-only"
    dtypes = ("float32",)


class RoundsToTf32(_NumpyLike):
    """A float32 backend that silently rounds its inputs to TF32 (10 mantissa bits)."""

    name = "tf32-in-disguise"
    dtypes = ("float32",)

    def prepare(self, q, k):
        return round_to_tf32(q), round_to_tf32(k)


def round_to_tf32(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest value with a 10-bit mantissa (ties away from zero)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


class SlowPrepare(_NumpyLike):
    """Correct, with a deliberately slow prepare: only end-to-end time may include it."""

    name = "slow-prepare"
    dtypes = ("float32",)

    def prepare(self, q, k):
        time.sleep(0.02)
        return q.copy(), k.copy()


class CrashesAfterFirstSetup(_NumpyLike):
    """Sets up fine in the first process that sees the cell; segfaults in any later one (a
    crash that depends on where the process's buffers landed, say)."""

    name = "crashes-after-first-setup"

    def __init__(self, marker: str) -> None:
        from pathlib import Path

        self._marker = Path(marker)

    def prepare(self, q, k):
        if self._marker.exists():
            os.kill(os.getpid(), signal.SIGSEGV)
        self._marker.touch()
        return q, k
