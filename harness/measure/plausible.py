"""Step 5b, in the runner after sampling: is a cell's median physically possible here?

A median that implies more FLOP/s than the device's peak, or more bytes per second from memory
than its bandwidth, did not time the work: it timed a cached answer, a lazy result, or work
left running elsewhere. Such a cell is recorded as `implausible` with the figure that gave it
away, and its time is not shown as a result.

The limits come from the machine's peaks (`qkbench.machine.peaks`: per device and precision,
GFLOP/s and bandwidth_gbs). Where no peak is known for a cell's device and precision, that
limit is not checked, and `speed_limit_s` stays empty to say so.
"""

from __future__ import annotations

from dataclasses import dataclass

# How far above a peak a median may go before it is impossible rather than lucky. The cheats
# this check is for (a remembered answer, a lazy result, work left running) are off by orders
# of magnitude, so the margins are wide: an honest cell must never be flagged.
# A GPU's peak is its datasheet's (a physical ceiling) or one measured on a device that is
# rarely shared; twice it allows for a sibling model matched by name with higher clocks. The
# copy that measures bandwidth counts bytes read plus written while its stores also read each
# line first (write-allocate), so a kernel that mostly reads may move up to 1.5x its figure.
DEVICE_MARGIN = 2.0
# A CPU's measured peak is the best large matrix product timed once: on a shared machine it may
# have run while other processes held all cores but one (seen on the 2-vCPU VM: 31 GFLOP/s
# float32 stored, where an idle core pair does about 150), and a later honest kernel on an
# idle machine is then up to `cores` times faster. So without a physical ceiling the CPU margin
# is the device margin times the cores this process may use.


def margin(device: str, cores: int, physical: bool = False) -> float:
    """How many times a device's peak (or bandwidth) a median may imply. A physical peak (the
    CPU's ISA ceiling, qkbench.machine.cpu_peak, at its highest clock; a GPU's datasheet) is
    a limit no honest kernel passes: 1. A measured one needs the margins above."""
    if physical:
        return 1.0
    return DEVICE_MARGIN if device == "gpu" else DEVICE_MARGIN * max(cores, 1)


@dataclass(frozen=True)
class SpeedLimit:
    """The fastest median a cell can have here, and what sets it (None: nothing known)."""

    fastest_s: float | None
    compute_s: float | None  # flops at the peak's margin
    memory_s: float | None  # bytes that cannot come from cache, at the bandwidth's margin
    peak_gflops: float | None
    bandwidth_gbs: float | None
    factor: float  # on the peak
    memory_factor: float  # on the bandwidth, always a measured figure


def memory_bytes(min_bytes: int, cache_bytes: int) -> int:
    """The fewest bytes a call must move from or to memory rather than cache: all it must read
    and write but what the last cache level can hold. (A cold cell moves more; this lower
    bound holds for both.)"""
    return max(0, min_bytes - cache_bytes)


def speed_limit(flops: int, memory: int, peak_gflops: float | None,
                bandwidth_gbs: float | None, factor: float,
                memory_factor: float | None = None) -> SpeedLimit:
    """The limits at `factor` times the peak and `memory_factor` (default: `factor`) times the
    bandwidth (see `margin`)."""
    memory_factor = factor if memory_factor is None else memory_factor
    compute_s = flops / (factor * peak_gflops * 1e9) if peak_gflops else None
    memory_s = (memory / (memory_factor * bandwidth_gbs * 1e9)
                if bandwidth_gbs and memory > 0 else None)
    known = [s for s in (compute_s, memory_s) if s is not None]
    return SpeedLimit(max(known) if known else None, compute_s, memory_s, peak_gflops,
                      bandwidth_gbs, factor, memory_factor)


def implausible(median_s: float, flops: int, memory: int, limit: SpeedLimit,
                device: str, precision: str) -> str | None:
    """Why `median_s` cannot be a real time for the cell, or None when it can be."""
    if limit.compute_s is not None and median_s < limit.compute_s:
        gflops = flops / median_s / 1e9 if median_s > 0 else float("inf")
        times = "" if limit.factor == 1 else f"{limit.factor:g}× "
        return (f"the median {median_s:.3g} s implies {_figure(gflops)} GFLOP/s, more than "
                f"{times}the {device} {precision} peak of {_figure(limit.peak_gflops)} GFLOP/s")
    if limit.memory_s is not None and median_s < limit.memory_s:
        gbps = memory / median_s / 1e9 if median_s > 0 else float("inf")
        return (f"the median {median_s:.3g} s implies {_figure(gbps)} GB/s from memory "
                f"({memory:,} bytes that no cache holds), more than {limit.memory_factor:g}× the "
                f"{device} bandwidth of {_figure(limit.bandwidth_gbs)} GB/s")
    return None


def _figure(value: float | None) -> str:
    """355,386 for large figures, 0.001 for small ones: never rounded to a misleading 0."""
    if value is None:
        return "?"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
