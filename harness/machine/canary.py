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
workers are idle, twice over: with the BLAS's own threads, and on one thread. A reading is unfit
when either figure is an outlier *of this machine's own readings*:

* the threaded time lies beyond the far-out fence Q3 + 3·IQR of every reading so far (the
  warm-up's and the run's), or
* the threads' speed-up (threaded / one-thread time) lies beyond the same fence of its own
  history,

and a second reading taken at once is beyond the fences too. A lost-core stretch lasts a fraction
of a second to seconds, a reading about a millisecond, so a real stretch shows in both; a
one-off (an interrupt, a page fault, a timer tick) in one. The confirmation matters because the
fence is asked many times per round (the main process and every worker that sampled it): measured
on the 2-vCPU Zen 3 VM, idle, readings 20 ms apart, 0.75% of single readings were beyond the
fences and 0.1% of confirmed ones, which with five readings a round made 7% of rounds unfit on a
side against 1% (a round is set aside when both of its sides are).

Why a fence over the distribution and not the best reading: on a 2-vCPU Xeon (Emerald Rapids)
the probe's times are widely spread (best 131 us, typical 180-190 us back to back), so a limit
of "1.4x the fastest" called 61 of 100 back-to-back readings on an idle machine unfit, while on
the 2-vCPU Zen 3 VM the check was tuned on the same limit caught the lost-core stretches. The
quartiles of the readings themselves place the limit where this machine's readings are rare,
whatever their spread; Tukey's far-out fence (3 IQR) is a textbook constant, not one measured
on a VM: for a normal spread it lies 4.7 standard deviations above the median. The fence is
never closer than `min_margin` (the runner passes the config's `target_rel_ci`) above the third
quartile: a slowdown below the precision the run aims for cannot spoil a round.

A robust fence over the machine's own readings cannot catch a machine that is slow for the whole
run (it *is* the distribution); that is drift, which interleaving shares across backends, and
the OS-reported causes (`qkbench.machine.os_causes`) catch the usual reasons behind it.

`interleave` sets aside the rounds with an unfit reading on both sides (see there), and gives up
judging when it would set aside most of them with no cause the OS reports.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np
from threadpoolctl import ThreadpoolController

# Tukey's far-out fence: Q3 + FENCE_IQR * (Q3 - Q1).
FENCE_IQR = 3.0
# The fence needs quartiles of some readings: before this many, every reading is fit.
MIN_CALIBRATION_READINGS = 16
# The history the quartiles come from: enough for stable quartiles, short enough that a slow
# drift of the machine over a long run moves them.
HISTORY = 512
# The product: float64, SIZE x SIZE x SIZE, about 14 MFLOP (0.15 ms on two Zen 4 cores). Large
# enough for OpenBLAS and MKL to use their threads on it.
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
WARM_UP_READINGS = 24  # taken like the run's readings, so the two share one distribution
# ... but for no longer than this: 24 readings take about 40 ms on a quiet 2-core machine; at
# load 9 on the 2-vCPU VM a threaded probe took 21 ms instead of 0.2, and ten warm-ups (main
# process and workers) cost 17 s. Cut short, the fence is built from the run's own readings.
WARM_UP_MAX_S = 0.25


def fence(values: list[float], min_margin: float = 0.0) -> float | None:
    """Q3 + FENCE_IQR·IQR of `values`, at least (1 + min_margin)·Q3; None with too few."""
    if len(values) < MIN_CALIBRATION_READINGS:
        return None
    q1, q3 = (float(q) for q in np.quantile(np.asarray(values), [0.25, 0.75]))
    return max(q3 + FENCE_IQR * (q3 - q1), (1.0 + min_margin) * q3)


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
    """`fit()` says whether the machine runs the threaded probe at its usual speed and
    parallel speed-up, judged against its own readings. The probes, `clock` and `pause` are
    injectable for tests."""

    def __init__(self, probe: Callable[[], object] | None = None,
                 one_thread_probe: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 pause: Callable[[float], None] = time.sleep,
                 min_margin: float = 0.0, settle_s: float = SETTLE_S) -> None:
        if probe is None:
            probe, one_thread_probe = _blas_products()
        self._probe, self._one_thread_probe = probe, one_thread_probe
        self._clock, self._pause = clock, pause
        self.min_margin = min_margin
        self._settle_s = settle_s
        self.times: deque[float] = deque(maxlen=HISTORY)  # threaded readings
        self.ratios: deque[float] = deque(maxlen=HISTORY)  # threaded / one thread
        self.readings = 0
        self.unfit_readings = 0
        self.confirmations = 0  # readings beyond the fences that were read again
        self.spent_s = 0.0  # wall time the checks took, settling included

    @property
    def best_s(self) -> float:
        return min(self.times, default=float("inf"))

    def limits(self) -> tuple[float | None, float | None]:
        """(time fence, speed-up fence) as they stand; None while still calibrating."""
        return fence(list(self.times), self.min_margin), fence(list(self.ratios),
                                                               self.min_margin)

    def _time(self, probe: Callable[[], object]) -> float:
        start = self._clock()
        probe()
        return self._clock() - start

    def _reading(self) -> tuple[float, float | None]:
        elapsed = min(self._time(self._probe) for _ in range(PROBES_PER_READING))
        ratio = None
        if self._one_thread_probe is not None:
            alone = min(self._time(self._one_thread_probe) for _ in range(ONE_THREAD_PROBES))
            ratio = elapsed / alone if alone > 0 else None
        self._pause(self._settle_s)
        return elapsed, ratio

    def warm_up(self, readings: int = WARM_UP_READINGS, max_s: float = WARM_UP_MAX_S) -> None:
        """Take `readings` readings (at most `max_s` of them) so the fences stand before the
        first round (the first call also pays for the BLAS threads' start, so one more is
        taken and dropped)."""
        started = self._clock()
        self._reading()
        for _ in range(readings):
            elapsed, ratio = self._reading()
            self._remember(elapsed, ratio)
            if self._clock() - started > max_s:
                break
        self.spent_s += self._clock() - started

    def _remember(self, elapsed: float, ratio: float | None) -> None:
        self.times.append(elapsed)
        if ratio is not None:
            self.ratios.append(ratio)

    def _within(self, elapsed: float, ratio: float | None) -> bool:
        time_fence, ratio_fence = self.limits()
        fit = time_fence is None or elapsed <= time_fence
        if fit and ratio is not None and ratio_fence is not None:
            fit = ratio <= ratio_fence
        return fit

    def fit(self) -> bool:
        """Fit unless a reading and the confirming one taken at once are both beyond the
        fences (see the module docstring)."""
        started = self._clock()
        elapsed, ratio = self._reading()
        fit = self._within(elapsed, ratio)
        # Every reading joins the history, unfit ones too: the fences describe the machine as
        # it is, and a machine that is often slow widens them instead of losing its data.
        self._remember(elapsed, ratio)
        if not fit:
            elapsed, ratio = self._reading()
            fit = self._within(elapsed, ratio)
            self._remember(elapsed, ratio)
            self.confirmations += 1
        self.spent_s += self._clock() - started
        self.readings += 1
        self.unfit_readings += not fit
        return fit
