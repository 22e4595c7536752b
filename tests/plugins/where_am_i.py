"""A real NumPy backend that says, in its row's `info`, which interpreter its worker runs and
the value of QKBENCH_TEST_MARK there: what a test of the environments axis checks."""

from __future__ import annotations

import os
import sys

from qkbench.backends.base import Backend


class WhereAmI(Backend):
    name = "where-am-i"
    dtypes = ("float32",)

    def scores(self, q, k):
        return q @ k.T

    def info(self):
        return {"executable": sys.executable, "mark": os.environ.get("QKBENCH_TEST_MARK", "")}
