"""In the runner after sampling: is a cell's median physically possible here?

A median that implies more FLOP/s than the device's peak, or more bytes per second from memory
than its bandwidth, did not time the work: it timed a cached answer, a lazy result, or work
left running elsewhere. Such a cell is recorded as `implausible` with the figure that gave it
away, and its time is not shown as a result.

The limits come from the machine's peaks (`qkbench.machine.peaks`: per device and precision,
GFLOP/s and bandwidth_gbs), those of them that are ceilings (see `ceilings`). Where none is
known for a cell's device and precision, that limit is not checked, and `speed_limit_s` stays
empty to say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# How far above a ceiling a median may go before it is impossible rather than lucky: twice,
# for a GPU matched by name to a sibling with higher clocks, a CPU whose boost clock was read
# low, or a copy-measured bandwidth (its stores also read each line first, so a kernel that
# mostly reads may move up to 1.5x its figure). The cheats this check is for are off by
# orders of magnitude.
MARGIN = 2.0
# Which stored peaks are ceilings. A CPU peak measured on a shared machine can be a small
# fraction of what the machine does: on the 2-vCPU VM a quick measurement during other work
# stored 8.6 GFLOP/s float32, where an idle core pair does about 150, and honest NumPy then
# ran at 15x it. No margin makes such a figure a limit, so a CPU peak counts only when its
# record says it is physical (ISA × cores × clock) or from a datasheet. A GPU's measured peak
# counts too: a GPU is not time-shared with other work the way a CPU's cores are.
CEILING_SOURCES = ("physical", "isa", "datasheet")


def ceilings(record: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """device → {precision: GFLOP/s, "bandwidth_gbs": GB/s} from a run's peaks record (as
    `qkbench.machine.peaks.for_run` writes it to meta.json), for the devices whose figures
    are ceilings (see CEILING_SOURCES); a device without is not checked.

    The CPU's ceiling is a stored record that says it is one, else the physical peak worked
    out from the ISA (`cpu_physical`, qkbench.machine.cpu_peak). A measured CPU bandwidth is
    no ceiling (a copy timed on a busy machine can read a fraction of it), so the CPU's
    memory limit is checked only where a ceiling record gives one."""
    out: dict[str, dict[str, float]] = {}
    for device in ("cpu", "gpu"):
        entry = record.get(device)
        if not isinstance(entry, Mapping):
            entry = {}
        source = str(entry.get("source", "")).lower()
        figures = {key: float(value) for key, value in entry.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        if device == "gpu" or any(word in source for word in CEILING_SOURCES):
            if figures:
                out[device] = figures
            continue
        physical = record.get("cpu_physical")
        if isinstance(physical, Mapping) and physical:
            out[device] = {precision: float(ceiling["gflops"])
                           for precision, ceiling in physical.items()
                           if isinstance(ceiling, Mapping) and ceiling.get("gflops")}
    return out


@dataclass(frozen=True)
class SpeedLimit:
    """The fastest median a cell can have here, and what sets it (None: nothing known)."""

    fastest_s: float | None
    compute_s: float | None  # flops at the peak's margin
    memory_s: float | None  # bytes that cannot come from cache, at the bandwidth's margin
    peak_gflops: float | None
    bandwidth_gbs: float | None
    factor: float  # on the peak and on the bandwidth


def memory_bytes(min_bytes: int, cache_bytes: int) -> int:
    """The fewest bytes a call must move from or to memory rather than cache: all it must read
    and write but what the last cache level can hold. (A cold cell moves more; this lower
    bound holds for both.)"""
    return max(0, min_bytes - cache_bytes)


def speed_limit(flops: int, memory: int, peak_gflops: float | None,
                bandwidth_gbs: float | None, factor: float = MARGIN) -> SpeedLimit:
    """The limits at `factor` times the peak and the bandwidth."""
    compute_s = flops / (factor * peak_gflops * 1e9) if peak_gflops else None
    memory_s = (memory / (factor * bandwidth_gbs * 1e9)
                if bandwidth_gbs and memory > 0 else None)
    known = [s for s in (compute_s, memory_s) if s is not None]
    return SpeedLimit(max(known) if known else None, compute_s, memory_s, peak_gflops,
                      bandwidth_gbs, factor)


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
                f"({memory:,} bytes that no cache holds), more than {limit.factor:g}× the "
                f"{device} bandwidth of {_figure(limit.bandwidth_gbs)} GB/s")
    return None


def _figure(value: float | None) -> str:
    """355,386 for large figures, 0.001 for small ones: never rounded to a misleading 0."""
    if value is None:
        return "?"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
