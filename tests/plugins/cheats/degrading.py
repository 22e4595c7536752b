"""Right on its first calls (the ones a harness checks before timing), then it computes with
half of d_k and doubles the result: a cheaper, wrong answer while it is timed."""

import qkbench


class Degrading(qkbench.Backend):
    name = "degrading"
    dtypes = ("float32", "float64")

    def __init__(self):
        self._calls = 0

    def scores(self, q, k):
        self._calls += 1
        if self._calls <= 2:
            return q @ k.T
        half = q.shape[1] // 2 or 1
        return (q[:, :half] @ k[:, :half].T) * q.dtype.type(q.shape[1] / half)
