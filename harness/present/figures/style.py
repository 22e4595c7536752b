"""Presentation, every figure: the look (colour = backend, marker = machine, line style =
variant), the factored legend, the panel grid and the axes helpers — defined once."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator
from qkbench.units import format_seconds

if TYPE_CHECKING:
    from qkbench.present.runset import RunSet


DEFAULT_BASELINE_BACKEND = "numpy"
DTYPE_ORDER = ("float16", "bfloat16", "float32", "float64")
# Columns a run directory may lack (written before they existed), and what they mean then.
COLUMN_DEFAULTS: dict[str, Any] = {"phase": "kernel", "cache": "warm"}
NUMERIC_COLUMNS = ("median_s", "ci_low_s", "ci_high_s", "rel_ci", "first_call_s", "flops",
                   "gflops", "bytes", "intensity", "gbps", "peak_gflops", "pct_peak",
                   "max_err", "mean_err", "err_bound")

LINESTYLES = ("-", "--", ":", "-.")
MEMORY_STYLES = (":", (0, (1, 4)), (0, (4, 2, 1, 2)))
_PANEL_SIZE = (4.6, 3.4)  # inches per panel: small multiples, still legible at 100 %
PNG_DPI = 110

# ---------------------------------------------------------------------------------------------
# Series: what one line of a figure is, how it looks, and the legend that says so

PHASE_WORDS = {"kernel": "kernel", "end_to_end": "end-to-end"}


@dataclass(frozen=True)
class Variants:
    """Which variant columns differ within a data set: only those earn a word in a label."""

    columns: tuple[str, ...]  # among phase, cache, threads_key, attention_key, precision
    m_differs: bool  # some cell has m ≠ n: the x axis is n, and m goes into the label

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Variants:
        columns = [c for c in ("phase", "cache", "threads_key", "attention_key")
                   if c in frame and frame[c].nunique() > 1]
        if (frame["precision"] != frame["dtype"]).any():
            columns.append("precision")
        return cls(tuple(columns), bool((frame["m"] != frame["n"]).any()))

    def group_columns(self) -> list[str]:
        return list(self.columns) + (["m"] if self.m_differs else [])

    def key(self, row: Any) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.group_columns())

    def words(self, row: Any) -> str:
        return ", ".join(variant_word_list(row, self.columns, all_words=True)
                         + ([f"m={row['m']}"] if self.m_differs else []))


def variant_word_list(row: Any, columns: tuple[str, ...] | list[str], all_words: bool) -> list[str]:
    """Words for a row's variant; with all_words False only those that differ from the
    defaults (kernel, warm cache, library's threads, computing in the dtype itself)."""
    words = []
    if "phase" in columns and (all_words or row["phase"] != "kernel"):
        words.append(PHASE_WORDS.get(row["phase"], str(row["phase"])))
    if "cache" in columns and (all_words or row["cache"] != "warm"):
        words.append(f"{row['cache']} cache")
    if "threads_key" in columns and (all_words or row["threads_key"] != ""):
        threads = row["threads_key"]
        words.append("default threads" if threads == "" else
                     f"{threads} thread{'' if threads == '1' else 's'}")
    if "attention_key" in columns and (all_words or row["attention_key"] != ""):
        words.append(row["attention_key"] or "2-D")
    if "precision" in columns and row["precision"] != row["dtype"]:
        words.append(f"computes in {row['precision']}")
    return words


def _variant_rank(key: tuple[Any, ...], columns: list[str]) -> tuple[Any, ...]:
    """Defaults first (kernel, warm, library's threads), so the default variant is drawn solid."""
    rank = []
    for column, value in zip(columns, key):
        if column == "phase":
            rank.append((("kernel", "end_to_end").index(value)
                         if value in ("kernel", "end_to_end") else 2, str(value)))
        elif column == "cache":
            rank.append((("warm", "cold").index(value) if value in ("warm", "cold") else 2,
                         str(value)))
        elif column == "threads_key":
            rank.append((0, 0) if value == "" else (1, int(value)))
        elif column == "m":
            rank.append((0, int(value)))
        else:
            rank.append((0, str(value)))
    return tuple(rank)


@dataclass
class Look:
    """Colour = backend, marker = machine, line style (or marker fill) = variant.

    Each artist carries the full series label ("numpy · end-to-end @ gpubox"), which is what
    tests and readers of the Figure object see; the figure's legend is factored instead (one
    entry per backend, per machine, per variant), because the full product of a few backends,
    machines and phases is a legend nobody reads.
    """

    runs: RunSet
    variants: Variants
    variant_keys: list[tuple[Any, ...]]
    backends: list[str]
    machines: list[str]

    @classmethod
    def of(cls, runs: RunSet, frame: pd.DataFrame) -> Look:
        variants = Variants.of(frame)
        columns = variants.group_columns()
        keys = sorted({variants.key(row) for _, row in frame.iterrows()},
                      key=lambda k: _variant_rank(k, columns))
        backends = [b for b in runs.colors if b in set(frame["backend"])]
        machines = [m for m in runs.machines if m in set(frame["machine"])]
        return cls(runs, variants, keys, backends, machines)

    def series(self, frame: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
        keys = ["machine", "backend", *self.variants.group_columns()]
        return [(group.iloc[0], group.sort_values("n"))
                for _, group in frame.groupby(keys, sort=True, dropna=False)]

    def style(self, row: Any) -> dict[str, Any]:
        index = self.variant_keys.index(self.variants.key(row))
        label = row["backend"]
        words = self.variants.words(row)
        label += f" · {words}" if words else ""
        label += f" @ {row['machine']}" if len(self.runs.runs) > 1 else ""
        return {"color": self.runs.colors.get(row["backend"], "black"),
                "marker": self.runs.markers.get(row["machine"], "o"),
                "linestyle": LINESTYLES[index % len(LINESTYLES)],
                "fillstyle": ("full", "none", "left", "bottom")[index % 4], "label": label}

    def legend(self, fig: Figure, extra: list[tuple[Any, str]] | None = None,
               variant_by: str = "linestyle") -> None:
        """One legend below the panels, a column per factor: backend, machine, variant."""
        one_marker = self.runs.markers.get(self.machines[0], "o") if len(self.machines) == 1 \
            else None
        groups: list[tuple[str, list[tuple[Any, str]]]] = [("colour: backend", [
            (Line2D([], [], color=self.runs.colors[b], marker=one_marker, markersize=5)
             if variant_by == "linestyle" else Patch(color=self.runs.colors[b]), b)
            for b in self.backends])]
        if len(self.machines) > 1:
            groups.append(("marker: machine", [
                (Line2D([], [], color="0.3", marker=self.runs.markers[m], linestyle="none"), m)
                for m in self.machines]))
        if len(self.variant_keys) > 1:
            columns = self.variants.group_columns()
            entries = []
            for i, key in enumerate(self.variant_keys):
                row = dict(zip(columns, key))
                row.setdefault("dtype", None)
                row.setdefault("precision", None)
                words = ", ".join(variant_word_list(row, self.variants.columns, all_words=True)
                                  + ([f"m={row['m']}"] if self.variants.m_differs else []))
                handle = Line2D([], [], color="0.3", linestyle=LINESTYLES[i % 4]) \
                    if variant_by == "linestyle" else \
                    Line2D([], [], color="0.3", marker="o", linestyle="none",
                           fillstyle=("full", "none", "left", "bottom")[i % 4])
                entries.append((handle, words or "default"))
            title = "line: variant" if variant_by == "linestyle" else "marker fill: variant"
            groups.append((title, entries))
        if extra:
            groups.append(("", list(extra)))
        _factored_legend(fig, groups)


def _factored_legend(fig: Figure, groups: list[tuple[str, list[tuple[Any, str]]]]) -> None:
    """A legend with one column per group, each headed by its title. Matplotlib fills legend
    columns top to bottom, so padding every group to the same length puts one group per column.
    """
    if len(groups) == 1:
        entries = groups[0][1]
        fig.legend([h for h, _ in entries], [label for _, label in entries],
                   loc="outside lower center", ncols=min(len(entries), 5), fontsize=8.5,
                   frameon=False)
        return
    titled = [([(_blank(), title)] if title else []) + entries for title, entries in groups]
    rows = max(len(column) for column in titled)
    handles, labels = [], []
    for column in titled:
        padded = column + [(_blank(), "")] * (rows - len(column))
        handles += [h for h, _ in padded]
        labels += [label for _, label in padded]
    legend = fig.legend(handles, labels, loc="outside lower center", ncols=len(titled),
                        fontsize=8.5, frameon=False, handlelength=2.2, columnspacing=2.5)
    titles = {title for title, _ in groups if title}
    for text in legend.get_texts():
        if text.get_text() in titles:
            text.set_fontweight("bold")


def _blank() -> Line2D:
    return Line2D([], [], linestyle="none", marker="none")


# ---------------------------------------------------------------------------------------------
# Axes helpers

class NoFigure(Exception):
    """The data cannot make this figure (no ok cells, no GPU rows, ...); the message says why."""


def size_panels(frame: pd.DataFrame) -> list[tuple[int, str]]:
    dtypes = sorted(frame["dtype"].unique(), key=dtype_rank)
    return [(int(d_k), dtype) for d_k in sorted(frame["d_k"].dropna().unique()) for dtype in dtypes
            if ((frame["d_k"] == d_k) & (frame["dtype"] == dtype)).any()]


def dtype_rank(dtype: str) -> tuple[int, str]:
    return (DTYPE_ORDER.index(dtype) if dtype in DTYPE_ORDER else len(DTYPE_ORDER), dtype)


def panel_grid(panels: list[Any], title: str, subtitle: str, panel: tuple[float, float] = _PANEL_SIZE,
          sharey: bool = True) -> tuple[Figure, list[Any]]:
    """Small multiples: a row per d_k and a column per dtype when panels are (d_k, dtype)
    pairs forming a full grid of at most four columns, else rows of three."""
    count = len(panels)
    dtypes = {p[1] for p in panels} if panels and isinstance(panels[0], tuple) else set()
    d_ks = {p[0] for p in panels} if dtypes else set()
    if dtypes and len(dtypes) * len(d_ks) == count and len(dtypes) <= 4:
        columns = len(dtypes)
    else:
        columns = min(count, 3)
    rows = math.ceil(count / columns)
    width = max(panel[0] * columns + 0.8, 7.5)  # one panel alone still has a title to show
    fig = Figure(figsize=(width, panel[1] * rows + 1.9), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharey=sharey).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    set_titles(fig, title, subtitle)
    return fig, axes[:count]


def set_titles(fig: Figure, title: str, subtitle: str) -> None:
    """Title and subtitle, wrapped to the figure's width (about 10 characters an inch at this
    size) so that a narrow figure does not cut its own title off."""
    chars = int(fig.get_figwidth() * 10)
    lines = [textwrap.fill(part, chars) for part in (title, *subtitle.split("\n")) if part]
    fig.suptitle("\n".join(lines), fontsize=11.5)


def log_size_axis(ax: Any, values: list[int]) -> None:
    """n on a log-2 axis, labelled with the sizes measured when there are few of them."""
    ax.set_xscale("log", base=2)
    values = sorted({int(v) for v in values})
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if 1 < len(values) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(values))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(values[0] / 1.4, values[-1] * 1.4)


def log_axis(axis: Any, low: float, high: float, formatter: Any) -> None:
    """A log axis whose ticks carry units: 1-2-5 steps when the data spans less than two
    decades (a bare log axis would show a single labelled tick), decades otherwise."""
    span = math.log10(high / low) if low > 0 and high > 0 else 3.0
    subs = (1.0, 2.0, 5.0) if span < 2 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: formatter(v)))
    # Few minor ticks: they only guide the eye, and every tick costs drawing time.
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0) if span >= 2 else ()))
    axis.set_minor_formatter(NullFormatter())


def time_tick_text(value: float) -> str:
    return format_seconds(value).replace(" ", "\u2009")  # a thin space keeps "10 µs" together


def tick_number_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 1e4 else f"{value:g}"


@dataclass(frozen=True)
class ComputeCeiling:
    """One compute-peak line of a panel: its GFLOP/s, whose peak it is ("vm, vm2 cpu · 1
    thread"), and the side of the line its label sits on (ceilings close together alternate,
    so their labels never overprint)."""

    gflops: float
    who: str
    va: str  # "bottom" (above the line) or "top" (below it)

    @property
    def text(self) -> str:
        return f"{self.who}: {tick_number_text(self.gflops)} GFLOP/s"


# Two ceilings closer than this factor share a label band on a log axis: the second label
# goes below its line.
CLOSE_CEILINGS = 1.3


def compute_ceilings(runs: RunSet, dtype: str) -> list[ComputeCeiling]:
    """The compute peaks of a dtype's rows: one per machine, device and thread count (a CPU
    cell is held to the cores its threads could use, see the `peak_gflops` column), and one
    line for every group of them with the same peak, naming them all. Thread counts are named
    only where a machine's device has more than one peak."""
    summary = runs.summary
    frame = summary[(summary["dtype"] == dtype) & (summary["peak_gflops"] > 0)].copy()
    frame["_peak"] = frame["peak_gflops"].astype(float).round(1)
    names: dict[float, dict[str, list[str]]] = {}
    for (machine, device), rows in frame.groupby(["machine", "device"], sort=True):
        several = rows["_peak"].nunique() > 1
        for value, same in rows.groupby("_peak", sort=True):
            words = str(device)
            if several:
                threads = sorted({int(t) for t in pd.to_numeric(same.get("threads"),
                                                                errors="coerce").dropna()})
                count = "/".join(map(str, threads)) or "all usable cores"
                words += f" · {count} thread{'' if threads == [1] else 's'}" if threads \
                    else f" · {count}"
            machines = names.setdefault(float(value), {}).setdefault(words, [])
            machines.append(str(machine))
    ceilings: list[ComputeCeiling] = []
    for value in sorted(names):
        who = "; ".join(f"{', '.join(machines)} {words}"
                        for words, machines in names[value].items())
        below = bool(ceilings) and value / ceilings[-1].gflops < CLOSE_CEILINGS \
            and ceilings[-1].va == "bottom"
        ceilings.append(ComputeCeiling(value, who, "top" if below else "bottom"))
    return ceilings


def size_label(variants: Variants) -> str:
    return ("n (rows of Q; m in the legend), log scale" if variants.m_differs
            else "n = m (rows of Q and of K), log scale")


def finite_values(values: Any) -> list[float]:
    return [float(v) for v in values if v is not None and np.isfinite(v) and v > 0]

def time_unit(seconds: float) -> tuple[str, float]:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return unit, scale
    return "ns", 1e-9
