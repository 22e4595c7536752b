"""A backend and its deliberately slowed twin, to measure how often compare catches a slowdown.

Both compute S = Q·Kᵀ with NumPy's BLAS, in four blocks of n/4 rows, and return the right
answer. The slowed one computes one of the blocks a second time, into fresh memory of its own:
five blocks of identical shape instead of four, 25% more of exactly the same work — a realistic
regression, not a sleep that the scheduler might hide or inflate. (Recomputing "an extra
quarter" as one smaller product instead costs about 35% more time, not 25%: small products use
BLAS less efficiently.) Used by benchmarks/aa_false_alarms.py under one label, "subject", so
the cells of the two versions match.
"""

from __future__ import annotations

import itertools

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

    def scores(self, q, k):
        s = super().scores(q, k)
        start, stop = self._blocks[0]
        # The fifth, redundant block, into fresh memory like the four real ones (first-touch
        # page faults are part of the real blocks' cost too).
        self._extra = np.empty((stop - start, k.shape[0]), dtype=q.dtype)
        np.matmul(q[start:stop], self._kt, out=self._extra)
        return s
