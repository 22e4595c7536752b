"""GPU timing without a GPU: device events, the L2 flush and CUDA graphs, driven by fakes.

The timer's logic runs against a fake clock and a fake device clock (deterministic); the
worker-to-row path runs a real sweep of a fake GPU plugin whose arithmetic is NumPy and whose
"events" count half the host time, so each figure can be traced to the clock it came from.
"""

import pytest

from qkbench.measure.kernel_timer import KernelTimer
from tests.conftest import read_summary, run_cli, write_config
from tests.test_timing import FakeClock, FakeKernel

FAKE = "tests.plugins.fake_gpu"


class FakeDeviceClock:
    """Events on the fake kernel's device: the time between start and stop is the device work
    queued in between (the kernel's async_s per call), never the host's launch cost."""

    name = "cuda-events"

    def __init__(self, kernel):
        self.kernel, self.events = kernel, []
        self.captured = 0

    def start(self):
        self.events.append("start")
        self._queued_at_start = self.kernel.pending

    def stop(self):
        self.events.append("stop")
        self._elapsed = self.kernel.pending - self._queued_at_start

    def elapsed_s(self):
        return self._elapsed

    def flush(self):
        self.events.append("flush")
        self.kernel.pending += 1.0  # a flush is long device work: it must stay out of samples

    def capture(self, block):
        self.captured += 1
        block()

        def replay():
            # One launch for the whole block: the host pays one call's launch cost.
            calls_before = self.kernel.calls
            block()
            self.kernel.clock.now -= (self.kernel.calls - calls_before - 1) * self.kernel.seconds
        return replay


def _timer(kernel, clock, **options):
    device = FakeDeviceClock(kernel)
    return KernelTimer(kernel.call, [(1, 2)], kernel.sync, clock, device_clock=device,
                       **options), device


def test_device_events_time_the_work_and_the_host_time_is_kept_beside_it():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=20e-6, async_s=5e-6)  # launch-bound: 20 µs to launch
    timer, _ = _timer(kernel, clock)
    [sample] = timer.samples(1, calls=4, round_number=0)
    assert sample.seconds == pytest.approx(5e-6)  # the device work per call
    assert sample.host_seconds == pytest.approx(25e-6)  # launches and work, as the host saw


def test_host_only_samples_have_no_separate_host_time():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=1e-3)
    [sample] = KernelTimer(kernel.call, [(1, 2)], kernel.sync, clock).samples(1, 2, 0)
    assert sample.seconds == pytest.approx(1e-3) and sample.host_seconds is None


def test_the_l2_flush_precedes_every_call_outside_the_events():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=1e-6, async_s=1e-3)
    timer, device = _timer(kernel, clock, flush_between_calls=True)
    [sample] = timer.samples(1, calls=3, round_number=0)
    assert device.events == ["flush", "start", "stop"] * 3
    assert sample.seconds == pytest.approx(1e-3)  # the 1 s flushes are in no sample
    assert sample.host_seconds is None  # the host clock saw the flushes: not a figure


def test_graphs_capture_a_block_once_and_replay_it():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=20e-6, async_s=5e-6)
    timer, device = _timer(kernel, clock, graphs=True)
    samples = timer.samples(3, calls=8, round_number=0)
    assert device.captured == 1 and timer.uses_graphs
    assert all(s.seconds == pytest.approx(5e-6) for s in samples)
    # One launch per block instead of eight: the host time per call drops with it.
    assert samples[0].host_seconds == pytest.approx((20e-6 + 8 * 5e-6) / 8)
    timer.samples(1, calls=16, round_number=1)
    assert device.captured == 2  # a new block size is a new graph


def test_a_flushed_cell_times_each_call_alone_and_captures_no_graph():
    # What a cold cell asked for graphs does (the real sweep below has warm cells only).
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=1e-6, async_s=1e-3)
    timer, device = _timer(kernel, clock, flush_between_calls=True, graphs=True)
    [sample] = timer.samples(1, calls=3, round_number=0)
    assert device.captured == 0 and not timer.uses_graphs
    assert device.events == ["flush", "start", "stop"] * 3
    assert sample.seconds == pytest.approx(1e-3)


def test_a_library_without_capture_falls_back_to_the_loop_and_says_so():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=1e-6, async_s=1e-4)
    device = FakeDeviceClock(kernel)
    device.capture = lambda block: None
    timer = KernelTimer(kernel.call, [(1, 2)], kernel.sync, clock, device_clock=device,
                        graphs=True)
    timer.samples(1, calls=4, round_number=0)
    assert not timer.uses_graphs


def test_flush_and_graphs_need_a_device_clock():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=1e-6)
    with pytest.raises(ValueError):
        KernelTimer(kernel.call, [(1, 2)], kernel.sync, clock, flush_between_calls=True)


def test_launch_overhead_is_the_host_time_of_one_launch():
    clock = FakeClock()
    kernel = FakeKernel(clock, seconds=7e-6, async_s=1e-3)
    timer, _ = _timer(kernel, clock)
    assert timer.launch_overhead() == pytest.approx(7e-6)  # not the 1 ms of device work


# ------------------------------------------------------------------ through a real sweep


def _sweep(tmp_path, backends, cache=("warm", "cold"), **timing):
    config = write_config(tmp_path, backends, timing={"processes": 1, **timing},
                          n=[64], cache=list(cache))
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    return read_summary(out).set_index(["backend", "cache"])


@pytest.fixture(scope="module")
def event_rows(tmp_path_factory):
    return _sweep(tmp_path_factory.mktemp("events"), [f"{FAKE}:EventFakeGpu", "numpy"])


def test_rows_say_which_clock_and_keep_the_host_median(event_rows):
    rows = event_rows
    gpu = rows.loc[("event-fake-gpu", "warm")]
    assert gpu["status"] == "ok" and gpu["clock"] == "cuda-events"
    # The fake's events count half the host time: the median is the events', not the host's.
    assert gpu["median_s"] < 0.75 * gpu["host_median_s"]
    assert gpu["launch_overhead_s"] > 0 and not gpu["l2_flush"] and not gpu["cuda_graph"]
    cpu = rows.loc[("numpy", "warm")]
    assert cpu["clock"] == "host" and cpu["host_median_s"] == cpu["median_s"]
    assert cpu["launch_overhead_s"] != cpu["launch_overhead_s"]  # NaN: no device clock


def test_a_cold_gpu_cell_flushes_the_l2_instead_of_rotating_copies(event_rows):
    rows = event_rows
    gpu, cpu = rows.loc[("event-fake-gpu", "cold")], rows.loc[("numpy", "cold")]
    assert gpu["l2_flush"] and gpu["cache_copies"] == 1
    # Each flush queues 2 ms of device work: none of it is in a 64×64 product's median.
    assert gpu["median_s"] < 1e-3
    assert not cpu["l2_flush"] and cpu["cache_copies"] > 1


def test_cuda_graphs_are_recorded_per_row(tmp_path):
    # Warm cells only: a cold cell flushes before every call and has no block to capture
    # (test_a_flushed_cell_times_each_call_alone_and_captures_no_graph).
    rows = _sweep(tmp_path, [f"{FAKE}:EventFakeGpu", f"{FAKE}:NoGraphFakeGpu", "numpy"],
                  cache=["warm"], cuda_graphs=True)
    assert rows.loc[("event-fake-gpu", "warm"), "cuda_graph"]
    assert not rows.loc[("no-graph-fake-gpu", "warm"), "cuda_graph"]  # could not capture
    assert not rows.loc[("numpy", "warm"), "cuda_graph"]  # no device clock, no graphs
    assert (rows["status"] == "ok").all()
