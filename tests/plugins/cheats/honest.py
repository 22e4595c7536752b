"""An honest plugin: NumPy's product, nothing remembered, nothing left running."""

import qkbench


class Honest(qkbench.Backend):
    name = "honest"
    dtypes = ("float32", "float64")

    def scores(self, q, k):
        return q @ k.T
