"""A backend and its deliberately slowed twin, to measure how often compare catches a slowdown.

Both compute S = Q·Kᵀ with NumPy's BLAS, in four blocks of n/4 rows, and return the right
answer. The slowed one then keeps the CPU busy for a quarter of what the plain call took in
the same process when it was prepared (before any warm-up, so the harness measures it a little
more: 1.28-1.33x the plain version on the 2-vCPU Zen 3 VM): a slowdown of a known size, on the
CPU, not a sleep that the scheduler might hide or inflate.

Why not 25% more products: at d_k = 64 one thread's product runs far below the FMA peak (about
44 of 117 GFLOP/s at n = 256 on that VM), and a fifth block of the same product did not cost a
fifth more. Measured there, it cost 0-35% more depending on the process, and the harness's
median at n = 256 came out 0.89-1.01x numpy's for the slowed version in all six runs, against
0.86-1.05x for the plain one. A detection rate needs a slowdown whose size is known. Used by
benchmarks/aa_false_alarms.py under one label, "subject", so the cells of the two versions match.

`Subject` is slowed by a share read from the environment variable `QKBENCH_SUBJECT_SLOWDOWN`
(a fraction; unset or 0: the plain product), measured on each call: two environments of one
paired run that differ only in that variable (benchmarks/paired_false_alarms.py).
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np

from qkbench.backends.base import Backend

BLOCKS = 4


class PlainNumpy(Backend):
    name = "numpy-plain"
    dtypes = ("float32", "float64")

    def prepare(self, q, k):
        q, k = np.ascontiguousarray(q), np.ascontiguousarray(k)
        edges = np.linspace(0, q.shape[0], BLOCKS + 1).astype(int)
        self._blocks = list(itertools.pairwise(edges))
        self._kt = k.T
        return q, k

    def scores(self, q, k):
        s = np.empty((q.shape[0], k.shape[0]), dtype=q.dtype)
        for start, stop in self._blocks:
            np.matmul(q[start:stop], self._kt, out=s[start:stop])
        return s


class SlowedNumpy(PlainNumpy):
    name = "numpy-slowed"
    EXTRA = 0.25  # of the plain call's time
    CALIBRATION_CALLS = 15

    def prepare(self, q, k):
        prepared = super().prepare(q, k)
        times = []
        for _ in range(self.CALIBRATION_CALLS):
            start = time.perf_counter()
            super().scores(*prepared)
            times.append(time.perf_counter() - start)
        self._extra_s = self.EXTRA * sorted(times)[len(times) // 2]
        return prepared

    def scores(self, q, k):
        s = super().scores(q, k)
        until = time.perf_counter() + self._extra_s
        while time.perf_counter() < until:  # busy, as a slower kernel would be
            pass
        return s


SLOWDOWN_VARIABLE = "QKBENCH_SUBJECT_SLOWDOWN"


class Subject(PlainNumpy):
    """The plain product, then busy for `slowdown` times what this very call's product took.

    Measured per call rather than calibrated once (as `SlowedNumpy` is): a calibration before
    warm-up came out 0.96-1.24x where 1.05-1.25x was meant (2-vCPU Zen 5 VM), so a detection
    rate would have measured the calibration. Per call, a process's own speed (where its
    buffers landed) scales the product and its extra alike: the candidate is exactly
    1 + slowdown times what the same process would take without it, and only the process
    effect stays between the two environments, as it would for a real slower kernel."""

    name = "subject"

    def __init__(self) -> None:
        self.slowdown = float(os.environ.get(SLOWDOWN_VARIABLE) or 0.0)

    def scores(self, q, k):
        if not self.slowdown:
            return super().scores(q, k)
        start = time.perf_counter()
        s = super().scores(q, k)
        now = time.perf_counter()
        until = now + self.slowdown * (now - start)
        while time.perf_counter() < until:  # busy, as a slower kernel would be
            pass
        return s

    def info(self):
        return {"slowdown": self.slowdown}
