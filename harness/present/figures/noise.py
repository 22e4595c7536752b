"""Presentation, the noisiest cells: every sample, as a distribution and in the order taken."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from qkbench.present.figures.style import NoFigure, set_titles, time_unit, variant_word_list
from qkbench.present.runset import RunSet
from qkbench.records import results
from qkbench.units import format_seconds


def noisiest(runs: RunSet, count: int = 4) -> pd.DataFrame:
    """The ok cells with the widest confidence intervals (largest rel_ci), widest first."""
    ok = runs.ok[runs.ok["rel_ci"].notna()]
    return ok.sort_values("rel_ci", ascending=False, kind="stable").head(count)


def cell_samples(runs: RunSet, row: Any) -> pd.DataFrame:
    """The raw samples of one summary row (same machine, backend and cell key)."""
    samples = runs.samples
    if samples.empty:
        return samples
    mask = ((samples["machine"] == row["machine"]) & (samples["backend"] == row["backend"])
            & (samples["dtype"] == row["dtype"]) & (samples["n"] == row["n"])
            & (samples["m"] == row["m"]) & (samples["d_k"] == row["d_k"])
            & (samples["phase"] == row["phase"]) & (samples["cache"] == row["cache"])
            & (samples["threads_key"] == row["threads_key"]))
    return samples[mask.fillna(False)].sort_values(["t_start", "round"], kind="stable")


def noisiest_cells(runs: RunSet, count: int = 4) -> Figure:
    """Per-call seconds of the noisiest cells: the distribution, and the same samples in the
    order they were taken, so a reader sees whether outliers, drift or two modes widened it."""
    rows = [row for _, row in noisiest(runs, count).iterrows()
            if len(cell_samples(runs, row)) > 0]
    if not rows:
        raise NoFigure("no ok cell has both a confidence interval and raw samples")
    fig = Figure(figsize=(11, 2.6 * len(rows) + 1.7), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False, width_ratios=(1, 2.4))
    set_titles(fig, "The noisiest cells (widest 95% CI of the median): every sample, as a "
              "distribution and in the order taken", runs.subtitle())
    rng = np.random.default_rng(0)  # jitter only: the same picture every time
    for (left, right), row in zip(axes, rows):
        samples = cell_samples(runs, row)
        kept = results.kept_mask(samples, ["machine"]).to_numpy()  # one cell: the machine is enough
        unit, scale = time_unit(float(samples.loc[kept, "seconds"].median()))
        every_value = samples["seconds"].to_numpy() / scale
        values, set_aside = every_value[kept], every_value[~kept]
        color = runs.colors.get(row["backend"], "black")
        median = row["median_s"] / scale
        low, high = row["ci_low_s"] / scale, row["ci_high_s"] / scale
        if len(values) >= 20:  # a violin of a handful of points invents a shape
            violin = left.violinplot([values], positions=[0], showextrema=False, widths=0.9)
            for body in violin["bodies"]:
                body.set_facecolor(color)
                body.set_alpha(0.2)
        else:
            left.boxplot([values], positions=[0], widths=0.5, showfliers=False,
                         medianprops={"color": color}, whis=(0, 100))
        if len(set_aside):
            left.scatter(rng.uniform(-0.22, 0.22, len(set_aside)), set_aside, s=12,
                         facecolors="none", edgecolors="0.5", linewidths=0.8, zorder=2,
                         label="set aside by the machine check (not in the median)")
        left.scatter(rng.uniform(-0.22, 0.22, len(values)), values, s=10, color=color,
                     alpha=0.75, linewidths=0, label="one sample (mean of its block of calls)",
                     zorder=3)
        t = samples["t_start"].to_numpy()
        timed = np.isfinite(t).all()
        elapsed = t - t.min() if timed else np.arange(len(every_value), dtype=float)
        right.plot(elapsed, every_value, color=color, linewidth=0.6)
        right.scatter(elapsed[kept], values, s=9, color=color, zorder=3)
        right.scatter(elapsed[~kept], set_aside, s=12, facecolors="none", edgecolors="0.5",
                      linewidths=0.8, zorder=3)
        log = every_value.max() / max(every_value.min(), 1e-300) > 30
        for ax in (left, right):
            ax.axhspan(low, high, color="0.5", alpha=0.22, linewidth=0,
                       label="95% CI of the median", zorder=0)
            ax.axhline(median, color="black", linewidth=1.1, label="median")
            if log:
                ax.set_yscale("log")
            ax.set_ylabel(f"time per call ({unit}{', log scale' if log else ''})")
            ax.grid(True, axis="y", alpha=0.3)
        left.set_xticks([])
        left.set_xlim(-0.6, 0.6)
        right.set_xlabel("seconds since the cell's first sample" if timed else "sample number")
        calls = int(row["calls_per_sample"]) if pd.notna(row["calls_per_sample"]) else 1
        where = f" @ {row['machine']}" if len(runs.runs) > 1 else ""
        words = variant_word_list(row, ("phase", "cache", "threads_key", "precision"),
                               all_words=False)
        left.set_title(f"{row['backend']} {row['dtype']}" + (f" ({', '.join(words)})"
                                                            if words else "")
                       + f"\nn={row['n']} m={row['m']} d_k={row['d_k']}{where}",
                       fontsize=9, loc="left")
        stopped = str(row.get("stopped_by") or "")
        status = "converged" if row["converged"] else (
            f"did not converge (stopped by {stopped})" if stopped not in ("", "None", "<NA>",
                                                                          "nan")
            else "did not converge")
        right.set_title(f"median {format_seconds(row['median_s'])}, 95% CI "
                        f"±{100 * row['rel_ci']:.0f}% · {len(values)} samples × {calls} "
                        f"call(s)" + (f" (+{len(set_aside)} set aside)" if len(set_aside) else "")
                        + f" · {status}", fontsize=9, loc="left")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8.5,
               frameon=False)
    return fig
