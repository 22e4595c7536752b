"""Has the machine lost part of its parallel capacity right now? A canary between rounds.

On a small cloud VM the vCPUs are threads on a host that other tenants share, and for stretches
of a fraction of a second to several seconds two vCPUs can stop running side by side: neither
is idle nor reports steal time, yet a two-threaded BLAS call gets no parallel speed-up. Each
library waits at its barriers differently, so the backends do not slow alike (measured on a
2-vCPU VM: NumPy about 2x, torch about 1.7x, Numba about 1.2x, a one-threaded loop not at all),
and a round sampled in such a stretch moves the *ratios* between backends, not only the times.
Interleaving cannot cancel that, and a run's share of such stretches differs from the next
run's, so two runs' ratios disagree.

The canary times a small multi-threaded matrix product in the main process, between two rounds,
while the workers are idle. Measured on that VM over 60 s, its time rose above 1.4x its best
in 17% of readings, and those caught 450 of the 456 moments when a two-threaded NumPy product
ran more than 1.4x slower than its best; in the other readings NumPy's 95th percentile was
1.22x. `interleave` sets aside the rounds bracketed by an unfit reading (see there).

The best time is the canary's own, so a machine that is slow throughout stays "fit": the check
catches a loss of parallel capacity relative to the same run, not a slow machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

# A reading more than this many times the best one so far says the machine is unfit.
SLOWDOWN_LIMIT = 1.4
# The product: float64, SIZE x SIZE x SIZE, about 14 MFLOP (0.15 ms on two Zen 4 cores).
SIZE = 192
# After the product the main process's BLAS threads spin until OPENBLAS_THREAD_TIMEOUT
# (2^20 cycles, a few tenths of a millisecond: see idle_threads); a pause lets them sleep
# before a worker's turn starts, so the canary never takes a core from a sample.
SETTLE_S = 0.001
# A reading is the fastest of this many products back to back: the first one after an idle
# spell also pays for waking the BLAS threads and the vCPUs they run on (measured on the 2-vCPU
# VM after a 20 ms pause: 11.6 ms, then 3.8 ms, then 0.23 ms), which is not a lost core.
PROBES_PER_READING = 3
WARM_UP_S = 0.2


def _blas_product(size: int = SIZE) -> Callable[[], None]:
    a = np.random.default_rng(0).standard_normal((size, size))
    b = a.T.copy()
    out = np.empty_like(a)
    return lambda: np.matmul(a, b, out=out)


class ParallelCanary:
    """`fit()` times the probe (PROBES_PER_READING times, keeping the fastest) and says whether the machine is
    running it at full parallel speed. `probe`, `clock` and `pause` are injectable for tests."""

    def __init__(self, probe: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 pause: Callable[[float], None] = time.sleep,
                 slowdown_limit: float = SLOWDOWN_LIMIT, settle_s: float = SETTLE_S) -> None:
        self._probe = probe or _blas_product()
        self._clock, self._pause = clock, pause
        self.slowdown_limit, self._settle_s = slowdown_limit, settle_s
        self.best_s = float("inf")
        self.readings = 0
        self.unfit_readings = 0
        self.spent_s = 0.0  # wall time the checks took, settling included

    def _time_probe(self) -> float:
        start = self._clock()
        self._probe()
        return self._clock() - start

    def warm_up(self, seconds: float = WARM_UP_S) -> None:
        """Run the probe for `seconds` so the best time is known before the first round
        (the first call also pays for the BLAS threads' start)."""
        started = self._clock()
        while self._clock() - started < seconds:
            self.best_s = min(self.best_s, self._time_probe())
        self.spent_s += self._clock() - started

    def fit(self) -> bool:
        started = self._clock()
        elapsed = min(self._time_probe() for _ in range(PROBES_PER_READING))
        self.best_s = min(self.best_s, elapsed)
        self._pause(self._settle_s)
        self.spent_s += self._clock() - started
        self.readings += 1
        fit = elapsed <= self.slowdown_limit * self.best_s
        self.unfit_readings += not fit
        return fit
