"""Computes on a thread of its own and returns at once; `sync()` does not wait for the thread,
so a timed block holds only the launches. `to_numpy` waits, so every answer is right."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import qkbench


class Unsynced(qkbench.Backend):
    name = "unsynced"
    dtypes = ("float32", "float64")

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1)

    def scores(self, q, k):
        return self._pool.submit(np.matmul, q, k.T)

    def sync(self):
        pass  # the cheat: queued work is not waited for

    def to_numpy(self, s):
        return s.result()
