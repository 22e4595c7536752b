"""Presentation, the roofline: achieved GFLOP/s against arithmetic intensity, under the
ceilings that are known (peaks.py measures them)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from qkbench.present.figures.style import (
    MEMORY_STYLES,
    dtype_rank,
    finite_values,
    tick_number_text,
    panel_grid,
    log_axis,
    Look,
    NoFigure,
    compute_ceilings,
)
from qkbench.present.runset import RunInfo, RunSet


def _peaks(runs: RunSet, dtype: str) -> dict[tuple[str, str], float]:
    """The highest known peak GFLOP/s per (machine, device) for a dtype (all its usable
    cores), from the summary's peak_gflops: where the memory roof meets the compute one."""
    frame = runs.summary[(runs.summary["dtype"] == dtype) & (runs.summary["peak_gflops"] > 0)]
    return {(machine, device): float(group["peak_gflops"].max())
            for (machine, device), group in frame.groupby(["machine", "device"], sort=True)}


def bandwidths(run: RunInfo) -> dict[str, float]:
    """Measured memory bandwidth (GB/s) per device from meta.json's environment peaks.

    Two layouts are read: per device ({"cpu": {"float32": ..., "bandwidth_gbs": ...}, "gpu":
    {...}}) and flat ({"float32": ..., "bandwidth_gbs": ...}, device unknown: key "").
    """
    peaks = run.environment.get("peaks")
    if not isinstance(peaks, dict):
        return {}
    found = {}
    sources = [(device, peaks.get(device)) for device in ("cpu", "gpu")] + [("", peaks)]
    for device, record in sources:
        value = record.get("bandwidth_gbs") if isinstance(record, dict) else None
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            found[device] = float(value)
    return found


def roofline(runs: RunSet) -> Figure:
    """Achieved GFLOP/s vs arithmetic intensity, one panel per dtype, under the known ceilings."""
    ok = runs.ok[runs.ok["intensity"].notna() & np.isfinite(runs.ok["gflops"])]
    if ok.empty:
        raise NoFigure("no ok cell with a known arithmetic intensity")
    look = Look.of(runs, ok)
    dtypes = sorted(ok["dtype"].unique(), key=dtype_rank)
    memory = {(run.host, device): bandwidth for run in runs.runs
              for device, bandwidth in bandwidths(run).items()}
    any_peak = any(_peaks(runs, dtype) for dtype in dtypes)
    note = "" if (memory or any_peak) else \
        "\nno peak GFLOP/s or memory bandwidth measured: ceilings not drawn"
    fig, axes = panel_grid(dtypes, "Roofline: achieved throughput vs arithmetic intensity (larger n "
                      "and d_k → right)", runs.subtitle() + note, panel=(5.4, 4.2))
    x_values = finite_values(ok["intensity"])
    x_lo, x_hi = min(x_values) / 1.6, max(x_values) * 1.6
    xs = np.geomspace(x_lo, x_hi, 100)
    y_values = finite_values(ok["gflops"])
    for ax, dtype in zip(axes, dtypes):
        cell = ok[ok["dtype"] == dtype]
        for row, group in look.series(cell):
            style = look.style(row)
            ax.plot(group["intensity"], group["gflops"], color=style["color"],
                    marker=style["marker"], fillstyle=style["fillstyle"], linestyle="none",
                    markersize=6, alpha=0.9, label=style["label"])
        peaks = _peaks(runs, dtype)
        # One line per thread count's peak (a one-thread cell's is one core's), one label for
        # machines that share a peak, and close labels on alternate sides of their lines.
        for ceiling in compute_ceilings(runs, dtype):
            ax.axhline(ceiling.gflops, color="0.3", linestyle=(0, (6, 3)), linewidth=1.1,
                       label=f"compute peak {ceiling.who}")
            ax.annotate(ceiling.text, (0.98, ceiling.gflops),
                        xycoords=("axes fraction", "data"), fontsize=7.5, color="0.25",
                        va=ceiling.va, ha="right")
            y_values.append(ceiling.gflops)
        for index, ((machine, device), bandwidth) in enumerate(memory.items()):
            peak = peaks.get((machine, device or "cpu"))
            roof = bandwidth * xs if peak is None else np.minimum(bandwidth * xs, peak)
            what = f"{machine} {device} memory" if device else f"{machine} memory"
            # Named in the legend, not on the line: labels at the left edge collide there.
            ax.plot(xs, roof, color="0.3", linestyle=MEMORY_STYLES[index % 3], linewidth=1.4,
                    label=f"{what}: {tick_number_text(bandwidth)} GB/s")
            y_values.append(float(roof[0]))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(x_lo, x_hi)
        ax.set_title(dtype, fontsize=10)
        ax.set_xlabel("arithmetic intensity (FLOP/byte; each input read once, S written "
                      "once), log scale", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    low, high = min(y_values), max(y_values)
    for ax in axes:
        log_axis(ax.yaxis, low, high, tick_number_text)
        log_axis(ax.xaxis, min(x_values), max(x_values), tick_number_text)
        ax.set_ylim(low / 2, high * 3)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("achieved GFLOP/s (log scale)")
    extra = []
    if any_peak:
        extra.append((Line2D([], [], color="0.3", linestyle=(0, (6, 3))), "compute ceiling"))
    for index, ((machine, device), bandwidth) in enumerate(memory.items()):
        what = f"{machine} {device} memory" if device else f"{machine} memory"
        extra.append((Line2D([], [], color="0.3", linestyle=MEMORY_STYLES[index % 3]),
                      f"{what}: {tick_number_text(bandwidth)} GB/s"))
    look.legend(fig, extra, variant_by="fill")
    return fig
