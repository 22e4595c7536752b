"""A NumPy backend that holds still, for tests that must catch a run in the middle.

`prepare` of a cell whose n is one of `QKBENCH_TEST_GATE_N` (comma-separated) waits until the
file named by `QKBENCH_TEST_GATE` exists: a test sees a shard's first cells finished and the
next one waiting, so a cancel or a requeue lands mid-run every time, however fast or slow the
machine is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from qkbench.backends.base import Backend


class Gated(Backend):
    name = "gated"
    dtypes = ("float32", "float64")

    def prepare(self, q, k):
        gate = os.environ.get("QKBENCH_TEST_GATE")
        held = os.environ.get("QKBENCH_TEST_GATE_N", "").split(",")
        if gate and str(q.shape[-2]) in held:
            while not Path(gate).exists():
                time.sleep(0.05)
        return q, k

    def scores(self, q, k):
        return q @ k.T
