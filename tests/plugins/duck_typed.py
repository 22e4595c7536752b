"""A plugin written to docs/plugins.md's table of required members without subclassing
`qkbench.Backend`: none of the optional hooks (load, set_threads, cleanup, telemetry, ...)."""

from __future__ import annotations

import numpy as np


class DuckTyped:
    name = "duck-typed"
    device = "cpu"
    dtypes = ("float32", "float64")

    def unavailable(self):
        return None

    def prepare(self, q, k):
        return q, k

    def scores(self, q, k):
        return q @ k.T

    def sync(self):
        pass

    def to_numpy(self, s):
        return np.asarray(s)

    def info(self):
        return {"written_without": "qkbench.Backend"}
