"""Has the machine lost part of its parallel capacity right now? A canary between rounds.

On a small cloud VM the vCPUs are threads on a host that other tenants share, and for stretches
of a fraction of a second to several seconds two vCPUs can stop running side by side: neither
is idle nor reports steal time, yet a two-threaded BLAS call gets no parallel speed-up. Each
library waits at its barriers differently, so the backends do not slow alike (measured on a
2-vCPU VM: NumPy about 2x, torch about 1.7x, Numba about 1.2x, a one-threaded loop not at all),
and a round sampled in such a stretch moves the *ratios* between backends, not only the times.
Interleaving cannot cancel that, and a run's share of such stretches differs from the next
run's, so two runs' ratios disagree.

The canary times a small matrix product in the main process, between two rounds, while the
workers are idle, twice over: with the BLAS's own threads, and on one thread. Either of two
readings makes the machine unfit:

* the threaded product took more than `SLOWDOWN_LIMIT` (1.4x) its best time in the run.
  Measured on that VM over 60 s: 17% of readings, which caught 450 of the 456 moments when a
  two-threaded NumPy product ran more than 1.4x slower than its best;
* the threads bought less than `PARALLEL_LIMIT` of the one-thread time (threaded / one thread
  above 0.85; a healthy 2-core machine gives about 0.55). This one needs no history: the VM
  also stayed in such a stretch for a whole 15 s run, where "its best in the run" was itself
  the slow time (NumPy was 2x slower, numba 1.35x, and every round passed the first test).

`interleave` sets aside the rounds bracketed by an unfit reading (see there). A machine slow
from start to end in a way that slows one thread as much as two (a slower clock) stays "fit":
that is drift, which interleaving handles.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import ThreadpoolController

# A reading more than this many times the best one so far says the machine is unfit.
SLOWDOWN_LIMIT = 1.4
# Threaded time / one-thread time above this says the threads ran nearly one at a time. A
# 192^3 product is large enough for OpenBLAS and MKL to use their threads on it.
PARALLEL_LIMIT = 0.85
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
ONE_THREAD_PROBES = 2  # one thread wakes nothing; two guard against an interrupt
WARM_UP_S = 0.2


def _blas_products(size: int = SIZE) -> tuple[Callable[[], object], Callable[[], object] | None]:
    """The product on the BLAS's own threads, and on one thread (None when NumPy's BLAS runs
    one thread anyway, or its threads cannot be set: there is no speed-up to check then)."""
    a = np.random.default_rng(0).standard_normal((size, size))
    b = a.T.copy()
    out = np.empty_like(a)

    def threaded() -> object:
        return np.matmul(a, b, out=out)

    blas = ThreadpoolController().select(user_api="blas")
    if max((info.get("num_threads") or 1 for info in blas.info()), default=1) < 2:
        return threaded, None

    def one_thread() -> object:
        with blas.limit(limits=1):  # about 8 us of the 0.3 ms measured: a constant, not noise
            return np.matmul(a, b, out=out)
    return threaded, one_thread


class ParallelCanary:
    """`fit()` says whether the machine runs the threaded probe at full parallel speed. The
    probes, `clock` and `pause` are injectable for tests."""

    def __init__(self, probe: Callable[[], object] | None = None,
                 one_thread_probe: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 pause: Callable[[float], None] = time.sleep,
                 slowdown_limit: float = SLOWDOWN_LIMIT, parallel_limit: float = PARALLEL_LIMIT,
                 settle_s: float = SETTLE_S) -> None:
        if probe is None:
            probe, one_thread_probe = _blas_products()
        self._probe, self._one_thread_probe = probe, one_thread_probe
        self._clock, self._pause = clock, pause
        self.slowdown_limit, self.parallel_limit = slowdown_limit, parallel_limit
        self._settle_s = settle_s
        self.best_s = float("inf")
        self.readings = 0
        self.unfit_readings = 0
        self.spent_s = 0.0  # wall time the checks took, settling included

    def _time(self, probe: Callable[[], object]) -> float:
        start = self._clock()
        probe()
        return self._clock() - start

    def warm_up(self, seconds: float = WARM_UP_S) -> None:
        """Run the probe for `seconds` so the best time is known before the first round
        (the first call also pays for the BLAS threads' start)."""
        started = self._clock()
        while self._clock() - started < seconds:
            self.best_s = min(self.best_s, self._time(self._probe))
        self.spent_s += self._clock() - started

    def fit(self) -> bool:
        started = self._clock()
        elapsed = min(self._time(self._probe) for _ in range(PROBES_PER_READING))
        self.best_s = min(self.best_s, elapsed)
        fit = elapsed <= self.slowdown_limit * self.best_s
        if fit and self._one_thread_probe is not None:
            alone = min(self._time(self._one_thread_probe) for _ in range(ONE_THREAD_PROBES))
            fit = elapsed <= self.parallel_limit * alone
        self._pause(self._settle_s)
        self.spent_s += self._clock() - started
        self.readings += 1
        self.unfit_readings += not fit
        return fit
