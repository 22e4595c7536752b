"""Backends that are healthy at every size but one, where each fails in its own way: the worker
pool's stress test (tests/test_stress.py, benchmarks/pool_stress.py). A fault that lands on the
wrong cell, or a healthy cell that ends as anything but `ok`, is the harness's failure. The
sweep and the status each cell must end with are defined here, once, for both."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pandas as pd

from qkbench.backends.base import Backend

# The status a cell of each fault must end with at the faulty size; every other cell is `ok`.
# "turns-slow": every call after the first `sleep_s` seconds of the cell also sleeps
# `slow_factor` times what a call took at prepare, as calls stretch when the machine turns busy
# in the middle of sampling; the cell is healthy.
FAULT_STATUS = {"none": "ok", "hang": "timeout", "segfault": "crashed", "exit": "crashed",
                "raise": "error", "oom": "oom", "nan": "mismatch", "slow-setup": "ok",
                "turns-slow": "ok"}
FAULTS = tuple(FAULT_STATUS)
PLUGIN = f"{__name__}:FaultAtSize"


def stress_config(faults: list[str], sizes: list[int], at_n: int, processes: int,
                  timeout_s: float, budget_s: float, sleep_s: float = 2.0) -> dict:
    """The sweep: numpy beside one plugin per fault, every backend in `processes` workers."""
    backends = ["numpy", *({"name": PLUGIN, "label": f"fault-{fault}",
                            "options": {"fault": fault, "at_n": at_n, "sleep_s": sleep_s}}
                           for fault in faults)]
    return {"name": "pool-stress", "backends": backends,
            "sweep": {"n": sizes, "d_k": [64], "dtype": ["float32"]},
            "timing": {"processes": processes, "timeout_s": timeout_s, "budget_s": budget_s,
                       "warmup_s": 0.0}}


def wrong_cells(summary: pd.DataFrame, at_n: int) -> pd.DataFrame:
    """The rows whose status is not the one their backend and size must give, with what was
    expected beside what came."""
    def expected(backend: str, n: int) -> str:
        fault = backend.removeprefix("fault-") if backend.startswith("fault-") else "none"
        return FAULT_STATUS[fault] if n == at_n else "ok"

    table = summary.assign(expected=[expected(b, n) for b, n in
                                     zip(summary["backend"], summary["n"])])
    return table[table["status"] != table["expected"]][
        ["backend", "n", "expected", "status", "reason"]]


class FaultAtSize(Backend):
    """numpy's product, except at n == `at_n`, where `fault` happens in `scores` (the first
    call: agreement) — or, for "slow-setup", a prepare that sleeps `sleep_s`, and for
    "turns-slow", calls that sleep once `sleep_s` have passed since the prepare."""

    dtypes = ("float32", "float64")

    def __init__(self, fault: str = "none", at_n: int = 512, sleep_s: float = 2.0,
                 slow_factor: float = 500.0) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}")
        self.fault, self.at_n, self.sleep_s, self.slow_factor = fault, at_n, sleep_s, slow_factor
        self._slow_s = 0.0

    def _faulty(self, q) -> bool:
        return self.fault != "none" and q.shape[-2] == self.at_n

    def prepare(self, q, k):
        if self.fault == "slow-setup" and self._faulty(q):
            time.sleep(self.sleep_s)
        if self.fault == "turns-slow" and self._faulty(q):
            # Relative to the call's own time: a request's wall time then stretches by the same
            # factor on any machine, whatever its block length.
            # The fastest of 20 calls: a call slowed by a busy neighbour here would make
            # the stretch many times the factor, and one block could outlast the limit.
            times = []
            for _ in range(20):
                start = time.perf_counter()
                q @ k.T
                times.append(time.perf_counter() - start)
            self._slow_s = self.slow_factor * min(times)
        self._slow_from = time.monotonic() + self.sleep_s
        return q, k

    def scores(self, q, k):
        if self._faulty(q):
            if self.fault == "hang":
                time.sleep(3600)
            elif self.fault == "segfault":
                os.kill(os.getpid(), signal.SIGSEGV)
            elif self.fault == "exit":
                os._exit(7)
            elif self.fault == "raise":
                raise RuntimeError(f"fails at n = {self.at_n} on purpose")
            elif self.fault == "oom":
                raise MemoryError
            elif self.fault == "turns-slow" and time.monotonic() >= self._slow_from:
                time.sleep(self._slow_s)
            elif self.fault == "nan":
                s = q @ k.T
                s[0, 0] = np.nan
                return s
        return q @ k.T
