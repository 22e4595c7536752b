"""How fast the machine itself was at the start and the end of a run (meta.json "calibration").

A fixed reading — the same float64 product on one thread and on all of the BLAS's threads —
taken before the first cell and after the last. It is not a result: it tells `compare` how much
the *machine* differed between a baseline and a candidate (another tenant, another host under
the same VM type, a different clock), which no verdict on the code should be blamed for, and
the start-to-end pair tells how much it drifted within one run.

Why the median of a fixed count of calls, not the best: on a widely spread machine the best
call is a lucky one (see machine.canary), and the typical speed is what the cells' medians saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

# float64 256^3: 34 MFLOP, about 1-3 ms on one core of a current CPU, large enough for every
# BLAS to use its threads, small enough that 2 x CALLS calls take a few tenths of a second.
SIZE = 256
CALLS = 25
PRODUCT = f"float64 {SIZE}^3 matmul through NumPy's BLAS, median of {CALLS} calls"


def _median_rate(work: Callable[[], object], flops: float, calls: int,
                 clock: Callable[[], float]) -> float:
    work()  # wakes the BLAS threads; not a reading
    times = []
    for _ in range(calls):
        start = clock()
        work()
        times.append(clock() - start)
    return flops / float(np.median(times)) / 1e9


def reading(size: int = SIZE, calls: int = CALLS,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """{"one_thread_gflops", "all_threads_gflops", "threads", "utc"} now."""
    a = np.random.default_rng(0).standard_normal((size, size))
    b, out = a.T.copy(), np.empty_like(a)
    flops = 2.0 * size**3

    def product() -> object:
        return np.matmul(a, b, out=out)

    blas = ThreadpoolController().select(user_api="blas")
    threads = max((info.get("num_threads") or 1 for info in blas.info()), default=1)
    all_threads = _median_rate(product, flops, calls, clock)
    with blas.limit(limits=1):
        one_thread = _median_rate(product, flops, calls, clock)
    return {"one_thread_gflops": round(one_thread, 3), "all_threads_gflops": round(all_threads, 3),
            "threads": threads, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def speed(calibration: dict[str, Any] | None, kind: str) -> float | None:
    """The run's machine speed for `kind` ("one_thread" or "all_threads"): the mean of its
    start and end readings (None for a run without them)."""
    if not isinstance(calibration, dict):
        return None
    values = [float(r[f"{kind}_gflops"]) for r in (calibration.get("start"),
                                                   calibration.get("end"))
              if isinstance(r, dict) and r.get(f"{kind}_gflops")]
    return sum(values) / len(values) if values else None


def shift(baseline: list[dict[str, Any] | None], candidate: list[dict[str, Any] | None]
          ) -> dict[str, float]:
    """Candidate's machine speed / baseline's, per kind, over each side's runs (the median of
    the runs' speeds); only the kinds both sides have."""
    out = {}
    for kind in ("one_thread", "all_threads"):
        sides = []
        for runs in (baseline, candidate):
            speeds = [s for s in (speed(c, kind) for c in runs) if s]
            sides.append(float(np.median(speeds)) if speeds else None)
        if sides[0] and sides[1]:
            out[kind] = sides[1] / sides[0]
    return out
