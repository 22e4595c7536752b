"""Presentation, figures of ratios: speedup over a baseline backend, best GPU over best CPU
and the crossover size."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from qkbench.analysis import crossover
from qkbench.present.figures.style import (
    LINESTYLES,
    PHASE_WORDS,
    DEFAULT_BASELINE_BACKEND,
    dtype_rank,
    finite_values,
    tick_number_text,
    panel_grid,
    log_axis,
    log_size_axis,
    Look,
    NoFigure,
    size_panels,
    size_label,
)
from qkbench.present.runset import MARKERS, PALETTE, RunSet


def speedups(runs: RunSet, baseline: str = DEFAULT_BASELINE_BACKEND) -> pd.DataFrame:
    """Per ok cell of every other backend: baseline median / its median, on the same machine,
    shape, dtype and variant (> 1: faster than the baseline)."""
    ok = runs.ok
    keys = ["machine", "dtype", "n", "m", "d_k", "phase", "cache", "threads_key",
            "attention_key"]
    base = ok[ok["backend"] == baseline][keys + ["median_s"]].rename(
        columns={"median_s": "baseline_s"})
    merged = ok[ok["backend"] != baseline].merge(base, on=keys, how="inner")
    merged["speedup"] = merged["baseline_s"] / merged["median_s"]
    return merged


def speedup(runs: RunSet, baseline: str = DEFAULT_BASELINE_BACKEND) -> Figure:
    """Each backend's speedup over the baseline backend per cell, vs n, per (d_k, dtype)."""
    if not (runs.ok["backend"] == baseline).any():
        raise NoFigure(f"no ok cell of the baseline backend {baseline!r}")
    merged = speedups(runs, baseline)
    if merged.empty:
        raise NoFigure(f"no other backend has ok cells to compare with {baseline!r}")
    look = Look.of(runs, merged)
    panels = size_panels(merged)
    fig, axes = panel_grid(panels, f"Speedup over {baseline} in the same cell ({baseline}'s median "
                      "time / the backend's; above 1 = faster)", runs.subtitle())
    values = finite_values(merged["speedup"]) + [1.0]
    for ax, (d_k, dtype) in zip(axes, panels):
        cell = merged[(merged["d_k"] == d_k) & (merged["dtype"] == dtype)]
        ax.axhline(1.0, color="0.2", linewidth=1.0)
        for row, group in look.series(cell):
            style = look.style(row)
            ax.plot(group["n"].astype(float), group["speedup"], color=style["color"],
                    marker=style["marker"], linestyle=style["linestyle"], markersize=4.5,
                    linewidth=1.3, label=style["label"])
        ax.set_title(f"d_k = {d_k} · {dtype}", fontsize=10)
        ax.set_yscale("log")
        log_size_axis(ax, cell["n"].tolist())
        ax.set_xlabel(size_label(look.variants))
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes:
        log_axis(ax.yaxis, min(values), max(values), lambda v: f"{tick_number_text(v)}×")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(f"speedup over {baseline} (×, log scale)")
    look.legend(fig, [(Line2D([], [], color="0.2"), f"as fast as {baseline} (1×)")])
    return fig


def gpu_cpu_speedup(runs: RunSet) -> pd.DataFrame:
    """Best GPU backend over best CPU backend per shape family and n (qkbench.analysis.crossover's
    table, so the figure, the report and the terminal agree), plus a `group` column.

    Compared within each machine that has both; when no machine has both (a laptop run next to
    a GPU box's), across all the runs given.
    """
    ok = runs.ok
    has_both = [machine for machine in runs.machines
                if {"cpu", "gpu"} <= set(ok.loc[ok["machine"] == machine, "device"])]
    if has_both:
        pools = [(machine, ok[ok["machine"] == machine]) for machine in has_both]
    elif {"cpu", "gpu"} <= set(ok["device"]):
        hosts = {device: [m for m in runs.machines
                          if (ok.loc[ok["machine"] == m, "device"] == device).any()]
                 for device in ("gpu", "cpu")}
        pools = [(f"GPU of {', '.join(hosts['gpu'])} vs CPU of {', '.join(hosts['cpu'])}", ok)]
    else:
        return pd.DataFrame()
    tables = []
    for name, pool in pools:
        try:
            table = crossover.speedups(pool)
        except KeyError:  # CPU and GPU rows, but no shape that both measured
            continue
        if not table.empty:
            tables.append(table.assign(group=name))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


_FAMILY = ["group", *crossover.FAMILY]


def crossovers(table: pd.DataFrame) -> pd.DataFrame:
    """Per line of the GPU-over-CPU figure: qkbench.analysis.crossover's crossover n (NA when the GPU
    is not faster from some n on through the largest), and the sizes measured."""
    if table.empty:
        return pd.DataFrame()
    frames = []
    for name, part in table.groupby("group", sort=False):
        found = crossover.crossovers(part.drop(columns="group")).assign(group=name)
        sizes = part.groupby(crossover.FAMILY, dropna=False)["n"].agg(["min", "max"])
        found = found.merge(sizes.rename(columns={"min": "smallest_n", "max": "largest_n"}),
                            left_on=crossover.FAMILY, right_index=True, how="left")
        frames.append(found)
    return pd.concat(frames, ignore_index=True)[
        [*_FAMILY, "crossover_n", "smallest_n", "largest_n", "speedup_smallest",
         "speedup_largest"]]


def crossover_words(row: Any) -> str:
    """'GPU faster from n = 256' for a row of crossovers()."""
    if pd.isna(row["crossover_n"]):
        return f"no crossover up to n = {int(row['largest_n'])}"
    if int(row["crossover_n"]) == int(row["smallest_n"]):
        return "GPU faster at every n"
    return f"GPU faster from n = {int(row['crossover_n'])}"


def gpu_over_cpu(runs: RunSet) -> Figure:
    """Best GPU over best CPU backend vs n, per dtype, with the crossover marked."""
    table = gpu_cpu_speedup(runs)
    if table.empty:
        raise NoFigure("the runs have no shape with ok cells on both a CPU and a GPU backend")
    found = crossovers(table).set_index(_FAMILY)
    dtypes = sorted(table["dtype"].unique(), key=dtype_rank)
    groups = list(dict.fromkeys(table["group"]))
    compared = ("best CPU and best GPU backend of the same machine: " + ", ".join(groups)
                if all(g in runs.machines for g in groups) else groups[0])
    fig, axes = panel_grid(dtypes, "GPU over CPU: the best GPU backend's speedup over the best CPU "
                      "backend (above 1 = GPU faster)", runs.subtitle() + "\n" + compared,
                      panel=(5.4, 4.0))
    varies = {c: table[c].nunique() > 1 for c in ("m_rule", "phase", "cache")}
    d_ks = sorted(table["d_k"].unique())
    phases = sorted(set(table["phase"]), key=lambda p: (p != "kernel", p))
    caches = sorted(set(table["cache"]), key=lambda c: (c != "warm", c))
    values = finite_values(table["speedup"]) + [1.0]
    for ax, dtype in zip(axes, dtypes):
        ax.axhline(1.0, color="0.2", linewidth=1.0)
        panel = table[table["dtype"] == dtype]
        lines = sorted(panel.groupby(_FAMILY, sort=False), key=lambda item: (
            groups.index(item[0][0]), phases.index(item[0][2]), caches.index(item[0][3]),
            item[0][4], str(item[0][5])))
        for key, line in lines:
            group_name, _, phase, cache, d_k, m_rule = key[:6]  # then the attention axes
            line = line.sort_values("n")
            words = [f"d_k={d_k}" + crossover.attention_words(dict(zip(_FAMILY, key)))]
            words += [m_rule] if varies["m_rule"] else []
            words += [PHASE_WORDS.get(phase, phase)] if varies["phase"] else []
            words += [f"{cache} cache"] if varies["cache"] else []
            label = ", ".join(words) + (f" @ {group_name}" if len(groups) > 1 else "")
            label += f": {crossover_words(found.loc[key])}"
            color = PALETTE[d_ks.index(d_k) % len(PALETTE)]
            style = LINESTYLES[(phases.index(phase) + 2 * caches.index(cache)) % 4]
            marker = MARKERS[groups.index(group_name) % len(MARKERS)]
            ax.plot(line["n"].astype(float), line["speedup"], color=color, marker=marker,
                    linestyle=style, markersize=4.5, linewidth=1.4, label=label)
            n_cross = found.loc[key, "crossover_n"]
            if not pd.isna(n_cross):
                at = line[line["n"] == n_cross]
                ax.plot([float(n_cross)], [float(at["speedup"].iloc[0])], marker="o",
                        markersize=13, markerfacecolor="none", markeredgecolor=color,
                        markeredgewidth=1.6, linestyle="none", gid="crossover")
        ax.set_title(dtype, fontsize=10)
        ax.set_yscale("log")
        log_size_axis(ax, panel["n"].tolist())
        ax.set_xlabel("n (rows of Q; m in the legend), log scale" if varies["m_rule"]
                      else "n = m (rows of Q and of K), log scale")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes:
        log_axis(ax.yaxis, min(values), max(values), lambda v: f"{tick_number_text(v)}×")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("GPU speedup over CPU (×, log scale)")
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    handles["break-even (1×)"] = Line2D([], [], color="0.2")
    handles["crossover: GPU faster from this n through the largest"] = Line2D(
        [], [], marker="o", markersize=10, markerfacecolor="none", color="0.2", linestyle="none")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=2 if len(handles) > 3 else len(handles), fontsize=8.5, frameon=False)
    return fig
