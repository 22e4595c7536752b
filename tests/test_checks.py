"""The checks after timing, piece by piece: idle after sync(), untouched inputs, plausible
speeds, the kept answer of a timed block, and the richer agreement report."""

from __future__ import annotations

import numpy as np
import pytest

from qkbench.measure import agreement, checks, inputs, plausible
from qkbench.measure.kernel_timer import KernelTimer
from qkbench.measure.cell import CellFailure, CellPlan
from qkbench.measure.session import Session

QUIET = {"OPENBLAS_THREAD_TIMEOUT": "20", "GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "1"}


# ---------------------------------------------------------------- idle after sync()


def test_spin_allowance_follows_the_settings_in_force():
    short = checks.spin_allowance_s(QUIET)
    assert 1e-3 < short < 10e-3  # 2^20 cycles + 10000 spins + 1 ms, at the slowest clock
    # A user's own, longer settings are honoured, not overridden by a guess.
    assert checks.spin_allowance_s({**QUIET, "KMP_BLOCKTIME": "200"}) > short + 0.19
    assert checks.spin_allowance_s({**QUIET, "GOMP_SPINCOUNT": "3M"}) > short + 0.4
    # Library defaults when nothing is set: OpenBLAS alone spins 2^28 cycles.
    assert checks.spin_allowance_s({}) > 0.2


@pytest.mark.parametrize("setting", [{"OMP_WAIT_POLICY": "ACTIVE"},
                                     {"GOMP_SPINCOUNT": "infinite"},
                                     {"KMP_BLOCKTIME": "infinite"},
                                     {"KMP_BLOCKTIME": "soon"}])
def test_settings_that_spin_for_ever_or_cannot_be_read_turn_the_cpu_check_off(setting):
    assert checks.spin_allowance_s({**QUIET, **setting}) is None


class FakeThreads:
    """A fake /proc/self/task and clock: the main thread (1) and a pool thread (2) that uses
    `rate` of a core while it is runnable, for `busy_s` of wall time."""

    def __init__(self, rate: float, busy_s: float) -> None:
        self.now, self.rate, self.busy_s = 0.0, rate, busy_s

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def states(self):
        busy = self.now < self.busy_s
        on_cpu = self.rate * min(self.now, self.busy_s)
        return {1: ("R", 0), 2: ("R" if busy else "S", int(on_cpu * 1e9))}


def watch(threads: FakeThreads, allowance: float = 3e-3):
    return checks.watch_threads(allowance, 2, clock=threads.clock, states=threads.states,
                                sleep=threads.sleep, me=1)


def test_a_pool_thread_that_spins_within_its_allowance_and_sleeps_is_idle():
    used, watched, busy = watch(FakeThreads(rate=1.0, busy_s=2e-3))
    assert not busy and used == pytest.approx(2e-3)
    assert watched < 10e-3  # an honest cell costs a few milliseconds


def test_a_thread_that_keeps_computing_after_sync_is_busy():
    _, _, busy = watch(FakeThreads(rate=1.0, busy_s=1.0))
    assert busy


def test_a_starved_thread_is_judged_by_the_cpu_it_used_not_the_wall_time():
    # Another process leaves this thread a tenth of a core: it stays runnable, slowly.
    _, watched, busy = watch(FakeThreads(rate=0.1, busy_s=1.0))
    assert busy and watched > 40e-3
    # Runnable just as long, but using no more CPU than a spin may: not busy.
    _, _, busy = watch(FakeThreads(rate=0.001, busy_s=0.3))
    assert not busy


def test_without_per_thread_figures_the_process_cpu_time_decides():
    class Process(FakeThreads):
        def cpu(self):
            return self.rate * min(self.now, self.busy_s)

    honest = Process(rate=2.0, busy_s=2e-3)
    assert not checks.watch_cpu(3e-3, 2, clock=honest.clock, cpu=honest.cpu,
                                sleep=honest.sleep)[2]
    cheat = Process(rate=1.0, busy_s=1.0)
    assert checks.watch_cpu(3e-3, 2, clock=cheat.clock, cpu=cheat.cpu, sleep=cheat.sleep)[2]


def test_this_process_threads_are_readable_on_linux():
    states = checks.thread_states()
    if states is None:
        pytest.skip("no /proc/self/task here")
    import threading

    assert threading.get_native_id() in states


# ---------------------------------------------------------------- untouched inputs


def test_same_bits_tells_nan_from_nan_and_zero_from_minus_zero():
    a = np.array([np.nan, 0.0, 1.0], dtype=np.float32)
    assert checks.same_bits(a, a.copy())
    assert not checks.same_bits(a, np.array([np.nan, -0.0, 1.0], dtype=np.float32))
    assert not checks.same_bits(a, a[:2])


class BoxedInputs:
    """A backend whose prepared arrays are its own objects (as a device's would be)."""

    class Box:
        def __init__(self, array):
            self.array = array.copy()

    def to_numpy(self, s):
        return s.array


def test_input_guard_sees_host_and_prepared_arrays_changed_in_place():
    q, k = np.ones((4, 3), np.float32), np.ones((5, 3), np.float32)
    backend = BoxedInputs()
    prepared = [(backend.Box(q), backend.Box(k))]
    guard = checks.InputGuard.take(backend, (q.copy(), k.copy()), [(q, k)], prepared)
    assert guard.changed(backend) is None
    prepared[0][1].array[2, 1] = 7.0
    assert "prepared K" in guard.changed(backend)
    q[0, 0] = 2.0
    assert "Q (host array)" in guard.changed(backend)


# ---------------------------------------------------------------- plausible speeds


def test_a_median_beyond_the_peak_times_its_margin_is_implausible():
    flops = 2 * 512 * 512 * 64
    limit = plausible.speed_limit(flops, 0, peak_gflops=100.0, bandwidth_gbs=None)
    assert limit.fastest_s == pytest.approx(flops / 200e9)
    why = plausible.implausible(1e-6, flops, 0, limit, "cpu", "float32")
    assert "33,554 GFLOP/s" in why and "2× the cpu float32 peak of 100" in why
    assert plausible.implausible(2 * limit.fastest_s, flops, 0, limit, "cpu", "float32") is None


def test_bytes_a_cache_can_hold_set_no_bandwidth_limit():
    assert plausible.memory_bytes(10 << 20, 32 << 20) == 0
    limit = plausible.speed_limit(1, 0, None, bandwidth_gbs=10.0, factor=2.0)
    assert limit.fastest_s is None  # nothing known: not checked, and the row says so (NaN)
    big = plausible.memory_bytes(1 << 30, 32 << 20)
    limit = plausible.speed_limit(1, big, None, bandwidth_gbs=10.0, factor=2.0)
    assert "GB/s from memory" in plausible.implausible(1e-3, 1, big, limit, "gpu", "float32")


def test_only_ceilings_limit_speeds_never_a_cpu_peak_measured_on_a_shared_machine():
    record = {"cpu": {"float32": 8.6, "bandwidth_gbs": 3.1},  # measured under load
              "gpu": {"float32": 67_000.0, "bandwidth_gbs": 4_800.0,
                      "source": "datasheet (NVIDIA H200)"},
              "measured_utc": "2026-12-01T09:42:57+00:00"}
    assert plausible.ceilings(record) == {"gpu": {"float32": 67_000.0,
                                                  "bandwidth_gbs": 4_800.0}}
    record["cpu"]["source"] = "physical: AVX2 FMA × 2 cores × 3.5 GHz"
    assert plausible.ceilings(record)["cpu"] == {"float32": 8.6, "bandwidth_gbs": 3.1}
    assert plausible.ceilings({"cpu": None, "gpu": None}) == {}
    # Without a ceiling record, the CPU's physical peak (qkbench.machine.cpu_peak) is the one.
    del record["cpu"]["source"]
    record["cpu_physical"] = {"float32": {"gflops": 234.7, "factors": {}}}
    assert plausible.ceilings(record)["cpu"] == {"float32": 234.7}


# ---------------------------------------------------------------- the timed call's answer


def test_each_block_keeps_one_of_its_own_answers_drawn_at_random():
    calls = []

    def fn(q, k):
        calls.append(len(calls))
        return calls[-1]

    timer = KernelTimer(fn, [(None, None)], lambda: None)
    kept = set()
    for _ in range(40):
        before = len(calls)
        timer.time_block(8)
        assert before <= timer.kept < before + 8  # an answer of this block, not an earlier one
        kept.add(timer.kept - before)
    assert len(kept) > 3  # not always the same position in the block


# ---------------------------------------------------------------- agreement report


def test_agreement_reports_the_share_outside_the_bound_and_the_worst_entry():
    shape = inputs.build(16, 12, 8, seed=0, max_reference_elements=1 << 24)
    s = (shape.q @ shape.k.T).astype(np.float32)
    s[3, :6] += 1.0
    s[5, 7] += 2.0
    verdict = agreement.compare(s, shape.reference, "float32")
    assert verdict.outside_share == pytest.approx(7 / (16 * 12))
    assert verdict.worst == (5, 7) and "S[5, 7]" in verdict.reason
    s[9, 2] = np.nan
    verdict = agreement.compare(s, shape.reference, "float32")
    assert verdict.reason.startswith("NaN/Inf") and verdict.worst == (9, 2)


# ---------------------------------------------------------------- in the worker


@pytest.fixture
def shape_folder(tmp_path):
    for which, where in ((inputs.TIMED, tmp_path), (inputs.FRESH, inputs.fresh_folder(tmp_path))):
        inputs.save(inputs.build(48, 40, 16, seed=0, max_reference_elements=1 << 24, which=which),
                    where)
    return str(tmp_path)


def test_fresh_inputs_are_independent_of_the_timed_ones(shape_folder):
    from pathlib import Path

    timed = inputs.load(Path(shape_folder))
    fresh = inputs.load(inputs.fresh_folder(Path(shape_folder)))
    assert timed.q.shape == fresh.q.shape
    assert abs(np.corrcoef(timed.q.ravel(), fresh.q.ravel())[0, 1]) < 0.1
    # The timed set keeps the values earlier runs were timed on.
    assert np.array_equal(timed.q, inputs.master_inputs(48, 40, 16, 0)[0])


def _verify(path, folder):
    session = Session(path, {})
    session.setup(folder, CellPlan(dtype="float32", min_sample_s=1e-4, warmup_s=0.0))
    session.sample(6, 0)
    try:
        return session.handle(("verify", True))
    finally:
        session.release()


def test_an_honest_backend_passes_every_check_in_its_worker(shape_folder):
    figures = _verify("qkbench.backends.numpy_backend:NumpyBackend", shape_folder)
    assert figures.cpu_after_sync_s is not None or checks.spin_allowance_s() is None


def test_a_gpu_backend_reporting_queued_work_after_sync_is_unsynced(shape_folder):
    with pytest.raises(CellFailure) as failure:
        _verify("tests.plugins.fake_gpu:PendingFakeGpu", shape_folder)
    assert failure.value.status == "unsynced"
    assert failure.value.details.failed_check == "idle_after_sync"
    assert "queued device work" in failure.value.reason
