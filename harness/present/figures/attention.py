"""Figures for attention cells: prefill throughput, decode bandwidth, GPU-vs-CPU per model.

Drawn by `qkbench plot` beside the general figures whenever a run has attention cells (batch,
heads, causal or scaled; see docs/attention.md); runs of the plain 2-D product never get them.
One panel per model preset (or head configuration) and dtype, so one model's heads are never
averaged with another's; the same backend keeps its colour from the general figures.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from qkbench.analysis import crossover
from qkbench.present.figures.roofline import bandwidths
from qkbench.present.figures.style import NoFigure, compute_ceilings
from qkbench.present.runset import MARKERS, RunSet

CAPTIONS = {
    "attention_throughput": "Prefill (n = m): GFLOP/s against sequence length per model, "
                            "counting 2·B·H·d_k FLOP per unmasked entry of S (so causal cells "
                            "count about half); solid lines without the mask, dashed with it.",
    "decode_bandwidth": "Decode (n < m): GB/s against the number of keys m, counting each input "
                        "once (K once per key head) and S once; the dotted line is the "
                        "machine's measured memory bandwidth, the ceiling of this regime.",
    "attention_crossover": "Best GPU backend over best CPU backend per model and sequence "
                           "length; above 1 the GPU is faster.",
}
_SIZE = (4.8, 3.5)
_CAUSAL_STYLE = {False: "-", True: "--"}


def builders(runs: RunSet) -> dict[str, Any]:
    """The figures of this module, when the runs have attention cells; {} otherwise."""
    if attention_rows(runs.summary).empty:
        return {}
    return {"attention_throughput": attention_throughput, "decode_bandwidth": decode_bandwidth,
            "attention_crossover": attention_crossover}


def attention_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of attention cells (anything but the plain 2-D product)."""
    if "heads" not in frame:
        return frame.iloc[0:0]
    plain = ((frame["batch"].fillna(1) == 1) & (frame["heads"].fillna(1) == 1)
             & (frame["kv_heads"].fillna(1) == 1) & ~frame["causal"].fillna(False).astype(bool)
             & ~frame["scaled"].fillna(False).astype(bool))
    return frame[~plain]


def model_label(row: Any) -> str:
    """'llama-3-8b', or 'H=8/2 d_k=64' without a preset; ', B=4' when batched."""
    preset = row["preset"]
    label = str(preset) if isinstance(preset, str) and preset else \
        f"H={int(row['heads'])}/{int(row['kv_heads'])} d_k={int(row['d_k'])}"
    return label + (f", B={int(row['batch'])}" if int(row["batch"]) != 1 else "")


def _ok(runs: RunSet, column: str) -> pd.DataFrame:
    ok = attention_rows(runs.ok)
    ok = ok[np.isfinite(pd.to_numeric(ok[column], errors="coerce"))].copy()
    if not ok.empty:
        ok["model"] = [model_label(row) for _, row in ok.iterrows()]
        ok["causal"] = ok["causal"].astype(bool)
    return ok


def size_panels(title: str, subtitle: str, names: list[Any]) -> tuple[Figure, list[Any]]:
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    # At least two panels wide: the title and the legend need the room of one figure, not
    # of one panel.
    width = max(_SIZE[0] * columns, 2 * _SIZE[0])
    fig = Figure(figsize=(width, _SIZE[1] * rows + 1.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    wrap = int(width * 11)  # characters per line at this font size
    fig.suptitle(textwrap.fill(title, wrap) + "\n" + textwrap.fill(subtitle, wrap), fontsize=10)
    return fig, list(axes[:len(names)])


def _legend(fig: Figure, handles: dict[str, Line2D]) -> None:
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(4, len(handles)), fontsize=8, frameon=False)


def attention_throughput(runs: RunSet) -> Figure:
    """GFLOP/s vs n for prefill cells (n = m), one panel per model and dtype."""
    ok = _ok(runs, "gflops")
    ok = ok[ok["n"] == ok["m"]] if not ok.empty else ok
    if ok.empty:
        raise NoFigure("no ok attention cell with n = m (prefill)")
    panels = sorted(ok.groupby(["model", "dtype"]).groups)
    fig, axes = size_panels("Prefill throughput vs sequence length (FLOP of unmasked entries / "
                        "median time; higher is better)", runs.subtitle(), panels)
    handles: dict[str, Line2D] = {}
    for ax, (model, dtype) in zip(axes, panels):
        panel = ok[(ok["model"] == model) & (ok["dtype"] == dtype)]
        for (machine, backend, causal), line in panel.groupby(["machine", "backend", "causal"]):
            line = line.sort_values("n")
            label = f"{backend}" + (f" ({machine})" if len(runs.runs) > 1 else "")
            ax.plot(line["n"].astype(float), line["gflops"], marker="o", markersize=4,
                    color=runs.colors.get(backend), linestyle=_CAUSAL_STYLE[bool(causal)])
            handles.setdefault(label, Line2D([], [], color=runs.colors.get(backend), marker="o"))
        for ceiling in compute_ceilings(runs, dtype):
            ax.axhline(ceiling.gflops, color="0.35", linestyle=(0, (6, 3)), linewidth=1.1)
            ax.annotate(ceiling.text, (0.02, ceiling.gflops), fontsize=7.5, va=ceiling.va,
                        xycoords=("axes fraction", "data"))
            handles.setdefault("measured peak GFLOP/s",
                               Line2D([], [], color="0.35", linestyle=(0, (6, 3))))
        ax.set_xscale("log", base=2)
        ax.set_title(f"{model} · {dtype}", fontsize=10)
        ax.set_xlabel("sequence length n = m (log scale)")
        ax.set_ylabel("GFLOP/s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    handles["not causal"] = Line2D([], [], color="0.3", linestyle="-")
    handles["causal"] = Line2D([], [], color="0.3", linestyle="--")
    _legend(fig, handles)
    return fig


def decode_bandwidth(runs: RunSet) -> Figure:
    """GB/s vs m for decode cells (n < m) under the measured memory bandwidth."""
    ok = _ok(runs, "gbps")
    ok = ok[ok["n"] < ok["m"]] if not ok.empty else ok
    if ok.empty:
        raise NoFigure("no ok attention cell with n < m (decode)")
    ceilings = {(run.host, device or "cpu"): value for run in runs.runs
                for device, value in bandwidths(run).items()}
    note = "" if ceilings else " · memory bandwidth not measured (qkbench peaks): no ceiling"
    panels = sorted(ok.groupby(["model", "dtype"]).groups)
    fig, axes = size_panels("Decode bandwidth vs keys in the cache (bytes of Q, of K once per key "
                        "head, and of S / median time; higher is better)",
                        runs.subtitle() + note, panels)
    handles: dict[str, Line2D] = {}
    queries = sorted(ok["n"].unique())
    mixed = bool(ok["causal"].any() and not ok["causal"].all())
    for ax, (model, dtype) in zip(axes, panels):
        panel = ok[(ok["model"] == model) & (ok["dtype"] == dtype)]
        for (machine, backend, n, causal), line in panel.groupby(
                ["machine", "backend", "n", "causal"]):
            line = line.sort_values("m")
            marker = MARKERS[queries.index(n) % len(MARKERS)]
            ax.plot(line["m"].astype(float), line["gbps"], marker=marker, markersize=4,
                    color=runs.colors.get(backend),
                    linestyle=_CAUSAL_STYLE[bool(causal) and mixed])
            label = f"{backend}" + (f" ({machine})" if len(runs.runs) > 1 else "")
            handles.setdefault(label, Line2D([], [], color=runs.colors.get(backend)))
            handles.setdefault(f"n = {n}", Line2D([], [], color="0.3", marker=marker,
                                                  linestyle="none"))
        for (machine, device), value in ceilings.items():
            if device in set(panel["device"]):
                ax.axhline(value, color="0.3", linestyle=":", linewidth=1.4)
                ax.annotate(f"{device} memory: {value:,.0f} GB/s", (0.02, value),
                            xycoords=("axes fraction", "data"), fontsize=7.5, va="bottom")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{model} · {dtype}", fontsize=10)
        ax.set_xlabel("keys m (log scale)")
        ax.set_ylabel("GB/s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    if ceilings:
        handles["memory bandwidth (ceiling)"] = Line2D([], [], color="0.3", linestyle=":")
    if mixed:
        handles["causal (dashed)"] = Line2D([], [], color="0.3", linestyle="--")
    _legend(fig, handles)
    return fig


def attention_crossover(runs: RunSet) -> Figure:
    """GPU-over-CPU speedup vs n per model, one line per causal / m rule / dtype."""
    ok = attention_rows(runs.ok)
    if not {"cpu", "gpu"} <= set(ok["device"]):
        raise NoFigure("needs ok attention cells of both a CPU and a GPU backend")
    table = crossover.speedups(ok)
    if table.empty:
        raise NoFigure("CPU and GPU backends share no attention shape")
    table["model"] = [model_label(row) for _, row in table.iterrows()]
    models = sorted(table["model"].unique())
    fig, axes = size_panels("GPU over CPU per model (best backend of each side; above 1: the GPU "
                        "is faster)", runs.subtitle(), models)
    handles: dict[str, Line2D] = {}
    styles: dict[tuple[Any, ...], tuple[str, str]] = {}
    for ax, model in zip(axes, models):
        panel = table[table["model"] == model]
        for key, line in panel.groupby(["dtype", "phase", "m_rule", "causal"]):
            dtype, phase, m_rule, causal = key
            label = f"{dtype} {phase} {m_rule}" + (" causal" if causal else "")
            color = styles.setdefault(key, (f"C{len(styles) % 10}", ""))[0]
            line = line.sort_values("n")
            ax.plot(line["n"].astype(float), line["speedup"], marker="o", markersize=4,
                    color=color, linestyle=_CAUSAL_STYLE[bool(causal)])
            handles.setdefault(label, Line2D([], [], color=color,
                                             linestyle=_CAUSAL_STYLE[bool(causal)]))
        ax.axhline(1.0, color="0.4", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("n (log scale)")
        ax.set_ylabel("speedup (log scale)")
        ax.grid(True, alpha=0.3)
    _legend(fig, handles)
    return fig
