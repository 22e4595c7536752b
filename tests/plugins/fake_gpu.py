"""A GPU as the tests need one: NumPy arithmetic behind the device hooks of a GPU backend.

Only for what a CPU machine cannot give a test: a device with little free memory, an
out-of-memory error, a clock that drops while sampling. The arithmetic is real (NumPy), so
the agreement check and the timing are real too.
"""

from __future__ import annotations

from qkbench.backends.base import Backend


class FakeGpu(Backend):
    name = "fake-gpu"
    device = "gpu"
    dtypes = ("float32",)
    free_bytes = 1 << 20  # 1 MiB "free": shapes beyond a few hundred rows do not fit
    clock_readings = (1980.0, 1500.0)  # the clock drops between warm-up and the end

    def __init__(self) -> None:
        self._reads = 0

    def scores(self, q, k):
        return q @ k.T

    def device_memory(self):
        return self.free_bytes, 8 << 20

    def peak_memory_bytes(self):
        return 123_456

    def telemetry(self):
        clock = self.clock_readings[min(self._reads, len(self.clock_readings) - 1)]
        self._reads += 1
        return {"sm_clock_mhz": clock, "temperature_c": 60.0 + self._reads, "power_w": 300.0}


class SteadyFakeGpu(FakeGpu):
    name = "steady-fake-gpu"
    clock_readings = (1980.0, 1975.0)


class OutOfDeviceMemory(FakeGpu):
    name = "oom-fake-gpu"
    free_bytes = 1 << 40

    def scores(self, q, k):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError and cupy's, which the harness recognises."""


class CrowdedFakeGpu(FakeGpu):
    """A device with room for two processes' copies of a cell: the third process finds it full.

    The processes that hold the cell are counted through files in `ledger` (one per process),
    the way a real GPU's free memory shrinks as other processes allocate."""

    name = "crowded-fake-gpu"
    room_for = 2

    def __init__(self, ledger: str) -> None:
        super().__init__()
        from pathlib import Path

        self._ledger = Path(ledger)

    def device_memory(self):
        import os

        others = [p for p in self._ledger.iterdir() if p.name != str(os.getpid())]
        return (0 if len(others) >= self.room_for else 8 << 20), 8 << 20

    def prepare(self, q, k):
        import os

        (self._ledger / str(os.getpid())).touch()
        return super().prepare(q, k)


class PendingFakeGpu(SteadyFakeGpu):
    """A device whose stream still reports queued work after `sync()` returned, as a backend
    that launches on a stream its `sync()` does not wait for would."""

    name = "pending-fake-gpu"

    def pending(self):
        return True


class FakeEvents:
    """A device clock as a GPU backend's `device_clock()` gives one, over the host clock.

    The "device" counts half of the host time between start and stop, so a test can tell
    which clock a figure came from. `flush` queues `flush_s` of device work, as a real L2
    flush (a kernel writing a buffer the size of the L2) does: events around a flush count it,
    so when the flushes are outside the events, none of that time reaches the samples. It costs
    no host time (a sleep here made the cold cell's thousands of flushed calls most of a test
    sweep's wall time)."""

    name = "cuda-events"
    device_share = 0.5
    flush_s = 0.002

    def __init__(self, captures: bool = True) -> None:
        import time

        self._now = time.perf_counter
        self._begin = self._end = 0.0
        self.flushes = 0
        self._queued_s = self._queued_at_start = self._queued_at_stop = 0.0
        self._captures = captures

    def start(self):
        self._begin, self._queued_at_start = self._now(), self._queued_s

    def stop(self):
        self._end, self._queued_at_stop = self._now(), self._queued_s

    def elapsed_s(self):
        return (self.device_share * (self._end - self._begin)
                + self._queued_at_stop - self._queued_at_start)

    def flush(self):
        self.flushes += 1
        self._queued_s += self.flush_s

    def capture(self, block):
        if not self._captures:
            return None
        block()  # a real capture records the launches; here a replay simply runs them again
        return block


class EventFakeGpu(SteadyFakeGpu):
    """A fake GPU with CUDA-event timing, an L2 flush and graph capture."""

    name = "event-fake-gpu"
    free_bytes = 1 << 30
    captures = True

    def device_clock(self):
        return FakeEvents(self.captures)


class NoGraphFakeGpu(EventFakeGpu):
    """Events but no graph capture (as numba-cuda): asked for graphs, rows say it had none."""

    name = "no-graph-fake-gpu"
    captures = False
