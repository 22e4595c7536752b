"""Presentation, figures of time and throughput against size."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from qkbench.present.figures.style import (
    finite_values,
    tick_number_text,
    time_tick_text,
    panel_grid,
    log_axis,
    log_size_axis,
    Look,
    NoFigure,
    size_panels,
    size_label,
    compute_ceilings,
)
from qkbench.present.runset import RunSet


def time_vs_size(runs: RunSet) -> Figure:
    """Median time per call vs n, one panel per (d_k, dtype), the 95% CI as error bars."""
    ok = runs.ok
    if ok.empty:
        raise NoFigure("no cell finished with status ok")
    look = Look.of(runs, ok)
    panels = size_panels(ok)
    fig, axes = panel_grid(panels, "Time per call of S = Q·Kᵀ vs size (median and its 95% CI; lower "
                      "is faster)", runs.subtitle())
    no_ci = False
    for ax, (d_k, dtype) in zip(axes, panels):
        cell = ok[(ok["d_k"] == d_k) & (ok["dtype"] == dtype)]
        for row, group in look.series(cell):
            style = look.style(row)
            x = group["n"].astype(float).to_numpy()
            y = group["median_s"].to_numpy()
            low = (group["median_s"] - group["ci_low_s"]).clip(lower=0).to_numpy()
            high = (group["ci_high_s"] - group["median_s"]).clip(lower=0).to_numpy()
            missing = np.isnan(low) | np.isnan(high)
            ax.errorbar(x, y, yerr=[np.nan_to_num(low), np.nan_to_num(high)], capsize=2.5,
                        color=style["color"], marker=style["marker"], markersize=4.5,
                        linestyle=style["linestyle"], linewidth=1.3, label=style["label"])
            if missing.any():  # fewer than 6 samples: no interval, so no bar that looks tight
                no_ci = True
                ax.plot(x[missing], y[missing], linestyle="none", marker=style["marker"],
                        markersize=4.5, markerfacecolor="white", color=style["color"],
                        zorder=3)
        ax.set_title(f"d_k = {d_k} · {dtype}", fontsize=10)
        ax.set_yscale("log")
        log_size_axis(ax, cell["n"].tolist())
        ax.set_xlabel(size_label(look.variants))
        ax.grid(True, which="major", alpha=0.3)
    values = finite_values(ok["median_s"]) + finite_values(ok["ci_high_s"])
    for ax in axes:
        log_axis(ax.yaxis, min(values), max(values), time_tick_text)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("time per call (log scale)")
    extra = [(Line2D([], [], color="0.3", marker="|", markersize=9, linestyle="none"),
              "95% CI of the median")]
    if no_ci:
        extra.append((Line2D([], [], linestyle="none", marker="o", markerfacecolor="white",
                             color="0.3"), "hollow: < 6 samples, no CI"))
    look.legend(fig, extra)
    return fig


def throughput(runs: RunSet) -> Figure:
    """GFLOP/s vs n per backend, one panel per (d_k, dtype), with the peak when it is known."""
    ok = runs.ok[np.isfinite(runs.ok["gflops"])]
    if ok.empty:
        raise NoFigure("no cell finished with status ok")
    look = Look.of(runs, ok)
    panels = size_panels(ok)
    fig, axes = panel_grid(panels, "Throughput of S = Q·Kᵀ vs size (2·n·m·d_k FLOP / median time; "
                      "higher is better)", runs.subtitle())
    values = finite_values(ok["gflops"])
    peaks_drawn = False
    for ax, (d_k, dtype) in zip(axes, panels):
        cell = ok[(ok["d_k"] == d_k) & (ok["dtype"] == dtype)]
        for row, group in look.series(cell):
            style = look.style(row)
            x = group["n"].astype(float).to_numpy()
            y = group["gflops"].to_numpy()
            # A time interval maps to a throughput interval the other way round.
            y_low = (group["flops"] / group["ci_high_s"] / 1e9).to_numpy()
            y_high = (group["flops"] / group["ci_low_s"] / 1e9).to_numpy()
            err = [np.nan_to_num(np.clip(y - y_low, 0, None)),
                   np.nan_to_num(np.clip(y_high - y, 0, None))]
            ax.errorbar(x, y, yerr=err, capsize=2.5, color=style["color"],
                        marker=style["marker"], markersize=4.5, linestyle=style["linestyle"],
                        linewidth=1.3, label=style["label"])
        for ceiling in compute_ceilings(runs, dtype):
            ax.axhline(ceiling.gflops, color="0.35", linestyle=(0, (6, 3)), linewidth=1.1,
                       label=f"peak {ceiling.who}")
            ax.annotate(ceiling.text, (0.02, ceiling.gflops),
                        xycoords=("axes fraction", "data"), fontsize=7.5, color="0.25",
                        va=ceiling.va)
            values.append(ceiling.gflops)
            peaks_drawn = True
        ax.set_title(f"d_k = {d_k} · {dtype}", fontsize=10)
        log_size_axis(ax, cell["n"].tolist())
        ax.set_xlabel(size_label(look.variants))
        ax.grid(True, which="major", alpha=0.3)
    low, high = min(values), max(values)
    log = high / low > 20
    for ax in axes:
        if log:
            ax.set_yscale("log")
            log_axis(ax.yaxis, low, high, tick_number_text)
        else:
            ax.set_ylim(0, high * 1.15)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("GFLOP/s" + (" (log scale)" if log else ""))
        if peaks_drawn and log:  # room above the ceiling for its label
            ax.set_ylim(top=high * 3)
    extra = [(Line2D([], [], color="0.35", linestyle=(0, (6, 3))), "peak GFLOP/s (ceiling)")] \
        if peaks_drawn else [(Line2D([], []), "peak unknown: no ceiling drawn")]
    look.legend(fig, extra)
    return fig
