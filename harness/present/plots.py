"""Step 7: run directories → figures (PNG and SVG), one run or many machines in one place.

Every figure has to stand on its own when it is pasted into a chat or a slide: a title that
says what is measured, the machine(s) in the subtitle, units on the axes, a legend, and log
scales where sizes span decades. Figures are built as `matplotlib.figure.Figure` objects, never
through pyplot: nothing global is touched (no backend switch, no figure registry to leak), and
the builders return the Figure so tests and the HTML report can use it without a file.

The same backend has the same colour in every figure, and the same machine the same marker, so
a reader who has learnt one figure can read the next.
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
)

from qkbench.analysis import crossover
from qkbench.records import results
from qkbench.present.console import format_seconds
from qkbench.errors import UsageError

DEFAULT_BASELINE_BACKEND = "numpy"
DTYPE_ORDER = ("float16", "bfloat16", "float32", "float64")
# Columns a run directory may lack (written before they existed), and what they mean then.
COLUMN_DEFAULTS: dict[str, Any] = {"phase": "kernel", "cache": "warm"}
NUMERIC_COLUMNS = ("median_s", "ci_low_s", "ci_high_s", "rel_ci", "first_call_s", "flops",
                   "gflops", "bytes", "intensity", "gbps", "peak_gflops", "pct_peak",
                   "max_err", "mean_err", "err_bound")

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", ":", "-.")
_MEMORY_STYLES = (":", (0, (1, 4)), (0, (4, 2, 1, 2)))
_PANEL_SIZE = (4.6, 3.4)  # inches per panel: small multiples, still legible at 100 %
_PNG_DPI = 110


# ---------------------------------------------------------------------------------------------
# Loading

def load_run(folder: Path | str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(summary, samples, meta) of one run directory, every column present.

    results.load_run reads the tables; on top of it, runs written before a column existed get
    its meaning: phase "kernel", cache "warm", threads_requested NA (the library's default),
    precision = dtype; bytes and arithmetic intensity are recomputed from the shape (each input
    read once, S written once); other figures stay NaN. Raises UsageError when the folder is
    not a finished run directory.
    """
    folder = Path(folder)
    try:
        summary, samples, meta = results.load_run(folder)
    except (OSError, ValueError, KeyError) as exc:  # a table that is there but unreadable
        raise UsageError(f"cannot read run directory {folder}: {exc}") from None
    if not isinstance(meta, dict):
        raise UsageError(f"cannot read run directory {folder}: meta.json is not a mapping")
    return _summary_defaults(summary), _sample_defaults(samples), meta


def _summary_defaults(summary: pd.DataFrame) -> pd.DataFrame:
    summary = summary.copy()
    for column in ("backend", "device", "dtype", "status", "reason"):
        if column not in summary:
            summary[column] = ""
    for column in ("n", "m", "d_k", "samples", "calls_per_sample"):
        if column not in summary:
            summary[column] = pd.NA
    summary = _key_defaults(summary)
    for column in NUMERIC_COLUMNS:
        values = summary.get(column, np.nan)
        summary[column] = pd.to_numeric(pd.Series(values, index=summary.index),
                                        errors="coerce").astype("float64")
    if "converged" not in summary:
        summary["converged"] = False
    summary["converged"] = summary["converged"].fillna(False).astype(bool)
    summary["reason"] = summary["reason"].fillna("").astype(str)
    # Recompute what the shape alone determines, for runs that predate these columns.
    n, m, d_k = (summary[c].astype("float64") for c in ("n", "m", "d_k"))
    itemsize = summary["dtype"].map(results.ITEMSIZE).astype("float64")
    flops = 2.0 * n * m * d_k
    summary["flops"] = summary["flops"].fillna(flops)
    summary["bytes"] = summary["bytes"].fillna((n * d_k + m * d_k + n * m) * itemsize)
    summary["intensity"] = summary["intensity"].fillna(summary["flops"] / summary["bytes"])
    ok = summary["status"] == "ok"
    summary.loc[ok, "gflops"] = summary.loc[ok, "gflops"].fillna(
        summary["flops"] / summary["median_s"] / 1e9)
    summary.loc[ok, "gbps"] = summary.loc[ok, "gbps"].fillna(
        summary["bytes"] / summary["median_s"] / 1e9)
    return summary


def _sample_defaults(samples: pd.DataFrame) -> pd.DataFrame:
    samples = samples.copy()
    for column in ("backend", "dtype", "n", "m", "d_k", "seconds"):
        if column not in samples:
            samples[column] = pd.Series(dtype="object")
    samples = _key_defaults(samples)
    samples["seconds"] = pd.to_numeric(samples["seconds"], errors="coerce").astype("float64")
    for column in ("t_start", "round", "calls"):
        values = samples.get(column, np.nan)
        samples[column] = pd.to_numeric(pd.Series(values, index=samples.index),
                                        errors="coerce").astype("float64")
    return samples


def _key_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    for column, default in COLUMN_DEFAULTS.items():
        if column not in frame:
            frame[column] = default
        frame[column] = frame[column].astype("object").where(frame[column].notna(), default)
        frame[column] = frame[column].astype(str)
    if "threads_requested" not in frame:
        frame["threads_requested"] = pd.NA
    frame["threads_requested"] = pd.array(
        pd.to_numeric(frame["threads_requested"], errors="coerce"), dtype="Int64")
    if "precision" not in frame:
        frame["precision"] = frame["dtype"]
    frame["precision"] = frame["precision"].astype("object").where(frame["precision"].notna(),
                                                                   frame["dtype"]).astype(str)
    for column in ("backend", "dtype"):
        frame[column] = frame[column].astype(str)
    for column in ("n", "m", "d_k"):
        frame[column] = pd.array(pd.to_numeric(frame[column], errors="coerce"), dtype="Int64")
    # A plain-text twin of threads_requested: NA never equals NA in a join or a groupby key.
    frame["threads_key"] = [("" if pd.isna(t) else str(int(t)))
                            for t in frame["threads_requested"]]
    # issue 16: the attention axes as one text variant ("llama-3-8b causal"; "" for 2-D), so
    # that one model's or one mask's cells are never joined into another's line.
    columns = [c for c in crossover.ATTENTION_COLUMNS if c in frame]
    words: dict[tuple[Any, ...], str] = {}
    frame["attention_key"] = [
        words.setdefault(key, crossover.attention_words(dict(zip(columns, key))).strip())
        for key in frame[columns].astype(object).itertuples(index=False, name=None)]
    return frame


# ---------------------------------------------------------------------------------------------
# Machines and run sets

@dataclass(frozen=True)
class RunInfo:
    folder: Path
    meta: dict[str, Any]
    host: str  # unique within a RunSet: the hostname, plus the folder name when two runs share it
    hardware: str  # CPU model, and GPU model(s) when the machine has any

    @property
    def label(self) -> str:
        return f"{self.host} ({self.hardware})" if self.hardware else self.host

    @property
    def environment(self) -> dict[str, Any]:
        env = self.meta.get("environment")
        return env if isinstance(env, dict) else {}

    @property
    def config_name(self) -> str:
        config = self.meta.get("config")
        return str(config.get("name", "")) if isinstance(config, dict) else ""


@dataclass
class RunSet:
    """Several run directories as one table: `machine` (RunInfo.host) and `run` columns added."""

    runs: list[RunInfo]
    summary: pd.DataFrame
    samples: pd.DataFrame
    colors: dict[str, str] = field(default_factory=dict)  # backend → colour
    markers: dict[str, str] = field(default_factory=dict)  # machine → marker

    @property
    def machines(self) -> list[str]:
        return [run.host for run in self.runs]

    @property
    def ok(self) -> pd.DataFrame:
        frame = self.summary
        return frame[(frame["status"] == "ok") & (frame["median_s"] > 0)]

    def subtitle(self) -> str:
        """The machines, for a figure's subtitle: who produced these numbers."""
        if len(self.runs) == 1:
            run = self.runs[0]
            name = f" · sweep '{run.config_name}'" if run.config_name else ""
            return f"{run.label}{name} · run {run.folder.name}"
        return "machines: " + "; ".join(run.label for run in self.runs)


def machine_hardware(meta: dict[str, Any]) -> str:
    """CPU model, then GPU model(s): 'AMD EPYC 9454 48-Core Processor / NVIDIA H100 80GB HBM3'."""
    env = meta.get("environment") if isinstance(meta.get("environment"), dict) else {}
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    parts = []
    model = " ".join(str(cpu.get("model") or "").replace("(R)", "").replace("(TM)", "").split())
    if model:
        parts.append(model)
    names = [str(gpu.get("name")) for gpu in env.get("gpus") or []
             if isinstance(gpu, dict) and gpu.get("name")]
    if names:
        counted = [f"{names.count(name)}× {name}" if names.count(name) > 1 else name
                   for name in dict.fromkeys(names)]
        parts.append(", ".join(counted))
    return " / ".join(parts)


def load_runs(folders: list[Path | str]) -> RunSet:
    """Load run directories (all checked before any is drawn) and label each by its machine."""
    if not folders:
        raise UsageError("no run directory given")
    loaded = [(Path(f), *load_run(f)) for f in folders]
    hosts = []
    for folder, _, _, meta in loaded:
        env = meta.get("environment") if isinstance(meta.get("environment"), dict) else {}
        hosts.append(str(env.get("hostname") or "unknown host"))
    labels = [(h, machine_hardware(m)) for h, (_, _, _, m) in zip(hosts, loaded)]
    runs = []
    for i, ((folder, _, _, meta), (host, hardware)) in enumerate(zip(loaded, labels)):
        if labels.count((host, hardware)) > 1 or hosts.count(host) > 1:
            host = f"{host} [{folder.name or folder.resolve().name}]"
            if sum(1 for f, *_ in loaded if f.name == folder.name) > 1:
                host = f"{host[:-1]} #{i + 1}]"
        runs.append(RunInfo(folder, meta, host, hardware))
    summaries, samples = [], []
    for run, (folder, summary, sample, _) in zip(runs, loaded):
        summaries.append(summary.assign(machine=run.host, run=folder.name))
        samples.append(sample.assign(machine=run.host, run=folder.name))
    summary = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    backends = sorted(summary["backend"].unique(),
                      key=lambda b: (_device_of(summary, b) != "cpu", b))
    colors = {b: _PALETTE[i % len(_PALETTE)] for i, b in enumerate(backends)}
    markers = {run.host: _MARKERS[i % len(_MARKERS)] for i, run in enumerate(runs)}
    return RunSet(runs, summary, sample, colors, markers)


def _device_of(summary: pd.DataFrame, backend: str) -> str:
    devices = summary.loc[summary["backend"] == backend, "device"].dropna().astype(str)
    return devices.iloc[0] if len(devices) else "cpu"


# ---------------------------------------------------------------------------------------------
# Series: what one line of a figure is, how it looks, and the legend that says so

_PHASE_WORDS = {"kernel": "kernel", "end_to_end": "end-to-end"}


@dataclass(frozen=True)
class _Variants:
    """Which variant columns differ within a data set: only those earn a word in a label."""

    columns: tuple[str, ...]  # among phase, cache, threads_key, attention_key, precision
    m_differs: bool  # some cell has m ≠ n: the x axis is n, and m goes into the label

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Variants:
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
        return ", ".join(_variant_words(row, self.columns, all_words=True)
                         + ([f"m={row['m']}"] if self.m_differs else []))


def _variant_words(row: Any, columns: tuple[str, ...] | list[str], all_words: bool) -> list[str]:
    """Words for a row's variant; with all_words False only those that differ from the
    defaults (kernel, warm cache, library's threads, computing in the dtype itself)."""
    words = []
    if "phase" in columns and (all_words or row["phase"] != "kernel"):
        words.append(_PHASE_WORDS.get(row["phase"], str(row["phase"])))
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
class _Look:
    """Colour = backend, marker = machine, line style (or marker fill) = variant.

    Each artist carries the full series label ("numpy · end-to-end @ gpubox"), which is what
    tests and readers of the Figure object see; the figure's legend is factored instead (one
    entry per backend, per machine, per variant), because the full product of a few backends,
    machines and phases is a legend nobody reads.
    """

    runs: RunSet
    variants: _Variants
    variant_keys: list[tuple[Any, ...]]
    backends: list[str]
    machines: list[str]

    @classmethod
    def of(cls, runs: RunSet, frame: pd.DataFrame) -> _Look:
        variants = _Variants.of(frame)
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
                "linestyle": _LINESTYLES[index % len(_LINESTYLES)],
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
                words = ", ".join(_variant_words(row, self.variants.columns, all_words=True)
                                  + ([f"m={row['m']}"] if self.variants.m_differs else []))
                handle = Line2D([], [], color="0.3", linestyle=_LINESTYLES[i % 4]) \
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

class _NoFigure(Exception):
    """The data cannot make this figure (no ok cells, no GPU rows, ...); the message says why."""


def _panels(frame: pd.DataFrame) -> list[tuple[int, str]]:
    dtypes = sorted(frame["dtype"].unique(), key=_dtype_rank)
    return [(int(d_k), dtype) for d_k in sorted(frame["d_k"].dropna().unique()) for dtype in dtypes
            if ((frame["d_k"] == d_k) & (frame["dtype"] == dtype)).any()]


def _dtype_rank(dtype: str) -> tuple[int, str]:
    return (DTYPE_ORDER.index(dtype) if dtype in DTYPE_ORDER else len(DTYPE_ORDER), dtype)


def _grid(panels: list[Any], title: str, subtitle: str, panel: tuple[float, float] = _PANEL_SIZE,
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
    _suptitle(fig, title, subtitle)
    return fig, axes[:count]


def _suptitle(fig: Figure, title: str, subtitle: str) -> None:
    """Title and subtitle, wrapped to the figure's width (about 10 characters an inch at this
    size) so that a narrow figure does not cut its own title off."""
    chars = int(fig.get_figwidth() * 10)
    lines = [textwrap.fill(part, chars) for part in (title, *subtitle.split("\n")) if part]
    fig.suptitle("\n".join(lines), fontsize=11.5)


def _log_size_axis(ax: Any, values: list[int]) -> None:
    """n on a log-2 axis, labelled with the sizes measured when there are few of them."""
    ax.set_xscale("log", base=2)
    values = sorted({int(v) for v in values})
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if 1 < len(values) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(values))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(values[0] / 1.4, values[-1] * 1.4)


def _log_axis(axis: Any, low: float, high: float, formatter: Any) -> None:
    """A log axis whose ticks carry units: 1-2-5 steps when the data spans less than two
    decades (a bare log axis would show a single labelled tick), decades otherwise."""
    span = math.log10(high / low) if low > 0 and high > 0 else 3.0
    subs = (1.0, 2.0, 5.0) if span < 2 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: formatter(v)))
    # Few minor ticks: they only guide the eye, and every tick costs drawing time.
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0) if span >= 2 else ()))
    axis.set_minor_formatter(NullFormatter())


def _format_time_tick(value: float) -> str:
    return format_seconds(value).replace(" ", "\u2009")  # a thin space keeps "10 µs" together


def _format_number(value: float) -> str:
    return f"{value:,.0f}" if value >= 1e4 else f"{value:g}"


def _size_label(variants: _Variants) -> str:
    return ("n (rows of Q; m in the legend), log scale" if variants.m_differs
            else "n = m (rows of Q and of K), log scale")


def _finite(values: Any) -> list[float]:
    return [float(v) for v in values if v is not None and np.isfinite(v) and v > 0]


# ---------------------------------------------------------------------------------------------
# The figures

def time_vs_size(runs: RunSet) -> Figure:
    """Median time per call vs n, one panel per (d_k, dtype), the 95% CI as error bars."""
    ok = runs.ok
    if ok.empty:
        raise _NoFigure("no cell finished with status ok")
    look = _Look.of(runs, ok)
    panels = _panels(ok)
    fig, axes = _grid(panels, "Time per call of S = Q·Kᵀ vs size (median and its 95% CI; lower "
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
        _log_size_axis(ax, cell["n"].tolist())
        ax.set_xlabel(_size_label(look.variants))
        ax.grid(True, which="major", alpha=0.3)
    values = _finite(ok["median_s"]) + _finite(ok["ci_high_s"])
    for ax in axes:
        _log_axis(ax.yaxis, min(values), max(values), _format_time_tick)
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
        raise _NoFigure("no cell finished with status ok")
    look = _Look.of(runs, ok)
    panels = _panels(ok)
    fig, axes = _grid(panels, "Throughput of S = Q·Kᵀ vs size (2·n·m·d_k FLOP / median time; "
                      "higher is better)", runs.subtitle())
    values = _finite(ok["gflops"])
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
        for (machine, device), peak in _peaks(runs, dtype).items():
            ax.axhline(peak, color="0.35", linestyle=(0, (6, 3)), linewidth=1.1,
                       label=f"peak {machine} {device}")
            ax.annotate(f"{machine} {device}: {_format_number(peak)}", (0.02, peak),
                        xycoords=("axes fraction", "data"), fontsize=7.5, color="0.25",
                        va="bottom")
            values.append(peak)
            peaks_drawn = True
        ax.set_title(f"d_k = {d_k} · {dtype}", fontsize=10)
        _log_size_axis(ax, cell["n"].tolist())
        ax.set_xlabel(_size_label(look.variants))
        ax.grid(True, which="major", alpha=0.3)
    low, high = min(values), max(values)
    log = high / low > 20
    for ax in axes:
        if log:
            ax.set_yscale("log")
            _log_axis(ax.yaxis, low, high, _format_number)
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


def _peaks(runs: RunSet, dtype: str) -> dict[tuple[str, str], float]:
    """Known peak GFLOP/s per (machine, device) for a dtype, from the summary's peak_gflops."""
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
        raise _NoFigure("no ok cell with a known arithmetic intensity")
    look = _Look.of(runs, ok)
    dtypes = sorted(ok["dtype"].unique(), key=_dtype_rank)
    memory = {(run.host, device): bandwidth for run in runs.runs
              for device, bandwidth in bandwidths(run).items()}
    any_peak = any(_peaks(runs, dtype) for dtype in dtypes)
    note = "" if (memory or any_peak) else \
        "\nno peak GFLOP/s or memory bandwidth measured: ceilings not drawn"
    fig, axes = _grid(dtypes, "Roofline: achieved throughput vs arithmetic intensity (larger n "
                      "and d_k → right)", runs.subtitle() + note, panel=(5.4, 4.2))
    x_values = _finite(ok["intensity"])
    x_lo, x_hi = min(x_values) / 1.6, max(x_values) * 1.6
    xs = np.geomspace(x_lo, x_hi, 100)
    y_values = _finite(ok["gflops"])
    for ax, dtype in zip(axes, dtypes):
        cell = ok[ok["dtype"] == dtype]
        for row, group in look.series(cell):
            style = look.style(row)
            ax.plot(group["intensity"], group["gflops"], color=style["color"],
                    marker=style["marker"], fillstyle=style["fillstyle"], linestyle="none",
                    markersize=6, alpha=0.9, label=style["label"])
        peaks = _peaks(runs, dtype)
        for (machine, device), peak in peaks.items():
            ax.axhline(peak, color="0.3", linestyle=(0, (6, 3)), linewidth=1.1,
                       label=f"compute peak {machine} {device}")
            ax.annotate(f"{machine} {device}: {_format_number(peak)} GFLOP/s", (0.98, peak),
                        xycoords=("axes fraction", "data"), fontsize=7.5, color="0.25",
                        va="bottom", ha="right")
            y_values.append(peak)
        for index, ((machine, device), bandwidth) in enumerate(memory.items()):
            peak = peaks.get((machine, device or "cpu"))
            roof = bandwidth * xs if peak is None else np.minimum(bandwidth * xs, peak)
            what = f"{machine} {device} memory" if device else f"{machine} memory"
            # Named in the legend, not on the line: labels at the left edge collide there.
            ax.plot(xs, roof, color="0.3", linestyle=_MEMORY_STYLES[index % 3], linewidth=1.4,
                    label=f"{what}: {_format_number(bandwidth)} GB/s")
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
        _log_axis(ax.yaxis, low, high, _format_number)
        _log_axis(ax.xaxis, min(x_values), max(x_values), _format_number)
        ax.set_ylim(low / 2, high * 3)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("achieved GFLOP/s (log scale)")
    extra = []
    if any_peak:
        extra.append((Line2D([], [], color="0.3", linestyle=(0, (6, 3))), "compute ceiling"))
    for index, ((machine, device), bandwidth) in enumerate(memory.items()):
        what = f"{machine} {device} memory" if device else f"{machine} memory"
        extra.append((Line2D([], [], color="0.3", linestyle=_MEMORY_STYLES[index % 3]),
                      f"{what}: {_format_number(bandwidth)} GB/s"))
    look.legend(fig, extra, variant_by="fill")
    return fig


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
        raise _NoFigure(f"no ok cell of the baseline backend {baseline!r}")
    merged = speedups(runs, baseline)
    if merged.empty:
        raise _NoFigure(f"no other backend has ok cells to compare with {baseline!r}")
    look = _Look.of(runs, merged)
    panels = _panels(merged)
    fig, axes = _grid(panels, f"Speedup over {baseline} in the same cell ({baseline}'s median "
                      "time / the backend's; above 1 = faster)", runs.subtitle())
    values = _finite(merged["speedup"]) + [1.0]
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
        _log_size_axis(ax, cell["n"].tolist())
        ax.set_xlabel(_size_label(look.variants))
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes:
        _log_axis(ax.yaxis, min(values), max(values), lambda v: f"{_format_number(v)}×")
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
        raise _NoFigure("the runs have no shape with ok cells on both a CPU and a GPU backend")
    found = crossovers(table).set_index(_FAMILY)
    dtypes = sorted(table["dtype"].unique(), key=_dtype_rank)
    groups = list(dict.fromkeys(table["group"]))
    compared = ("best CPU and best GPU backend of the same machine: " + ", ".join(groups)
                if all(g in runs.machines for g in groups) else groups[0])
    fig, axes = _grid(dtypes, "GPU over CPU: the best GPU backend's speedup over the best CPU "
                      "backend (above 1 = GPU faster)", runs.subtitle() + "\n" + compared,
                      panel=(5.4, 4.0))
    varies = {c: table[c].nunique() > 1 for c in ("m_rule", "phase", "cache")}
    d_ks = sorted(table["d_k"].unique())
    phases = sorted(set(table["phase"]), key=lambda p: (p != "kernel", p))
    caches = sorted(set(table["cache"]), key=lambda c: (c != "warm", c))
    values = _finite(table["speedup"]) + [1.0]
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
            words += [_PHASE_WORDS.get(phase, phase)] if varies["phase"] else []
            words += [f"{cache} cache"] if varies["cache"] else []
            label = ", ".join(words) + (f" @ {group_name}" if len(groups) > 1 else "")
            label += f": {crossover_words(found.loc[key])}"
            color = _PALETTE[d_ks.index(d_k) % len(_PALETTE)]
            style = _LINESTYLES[(phases.index(phase) + 2 * caches.index(cache)) % 4]
            marker = _MARKERS[groups.index(group_name) % len(_MARKERS)]
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
        _log_size_axis(ax, panel["n"].tolist())
        ax.set_xlabel("n (rows of Q; m in the legend), log scale" if varies["m_rule"]
                      else "n = m (rows of Q and of K), log scale")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes:
        _log_axis(ax.yaxis, min(values), max(values), lambda v: f"{_format_number(v)}×")
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
        raise _NoFigure("no ok cell has both a confidence interval and raw samples")
    fig = Figure(figsize=(11, 2.6 * len(rows) + 1.7), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False, width_ratios=(1, 2.4))
    _suptitle(fig, "The noisiest cells (widest 95% CI of the median): every sample, as a "
              "distribution and in the order taken", runs.subtitle())
    rng = np.random.default_rng(0)  # jitter only: the same picture every time
    for (left, right), row in zip(axes, rows):
        samples = cell_samples(runs, row)
        kept = results.kept_mask(samples, ["machine"]).to_numpy()  # one cell: the machine is enough
        unit, scale = _time_unit(float(samples.loc[kept, "seconds"].median()))
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
        words = _variant_words(row, ("phase", "cache", "threads_key", "precision"),
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


def _time_unit(seconds: float) -> tuple[str, float]:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return unit, scale
    return "ns", 1e-9


# ---------------------------------------------------------------------------------------------
# All figures, and writing them

CAPTIONS = {
    "time_vs_size": "Median time of one call vs size, per backend; error bars are the 95% "
                    "confidence interval of the median. One panel per d_k and dtype.",
    "throughput": "Achieved GFLOP/s (2·n·m·d_k / median time) vs size; the dashed line is the "
                  "machine's peak where it was measured.",
    "roofline": "Achieved GFLOP/s against arithmetic intensity (FLOP per byte of compulsory "
                "traffic), under the compute and memory-bandwidth ceilings that are known.",
    "speedup": "Speedup of each backend over {baseline} in the same cell ({baseline}'s median "
               "time / the backend's); above 1 is faster.",
    "gpu_over_cpu": "Best GPU backend over best CPU backend per shape; the circled point is the "
                    "crossover, the smallest n from which the GPU is faster at every size.",
    "noisiest_cells": "Every sample of the cells with the widest confidence intervals, as a "
                      "distribution and in the order taken: outliers, drift or two modes show "
                      "why an interval is wide.",
}


@dataclass
class Figures:
    figures: dict[str, Figure]  # name → figure, in reading order
    skipped: dict[str, str]  # name → why it was not drawn
    baseline: str

    def caption(self, name: str) -> str:
        from qkbench.present import attention_plots  # issue 16: attention figures

        text = CAPTIONS.get(name) or attention_plots.CAPTIONS.get(name, "")
        return text.replace("{baseline}", self.baseline)

    def stem(self, name: str) -> str:
        """The file name (without suffix) a figure is saved under."""
        return f"speedup_over_{self.baseline}" if name == "speedup" else name


def make_figures(runs: RunSet, baseline_backend: str | None = None) -> Figures:
    """Every figure the data allows; the others are listed in `skipped` with the reason.

    An explicitly named baseline backend that is in none of the runs is a usage error; the
    default one (numpy) missing only skips the speedup figure.
    """
    baseline = baseline_backend or DEFAULT_BASELINE_BACKEND
    if baseline_backend is not None and baseline_backend not in set(runs.summary["backend"]):
        known = ", ".join(sorted(runs.summary["backend"].unique()))
        raise UsageError(f"baseline backend {baseline_backend!r} is in none of the runs "
                         f"(backends there: {known})")
    builders = {"time_vs_size": time_vs_size, "throughput": throughput, "roofline": roofline,
                "speedup": lambda r: speedup(r, baseline), "gpu_over_cpu": gpu_over_cpu,
                "noisiest_cells": noisiest_cells}
    from qkbench.present import attention_plots  # issue 16: only for runs with attention cells

    builders.update(attention_plots.builders(runs))
    figures, skipped = {}, {}
    for name, build in builders.items():
        try:
            figures[name] = build(runs)
        except _NoFigure as exc:
            skipped[name] = str(exc)
    return Figures(figures, skipped, baseline)


def render(fig: Figure, fmt: str, **options: Any) -> bytes:
    """One figure as PNG or SVG bytes (SVG text stays text: smaller, searchable)."""
    buffer = io.BytesIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "qkbench"}):
        fig.savefig(buffer, format=fmt, dpi=_PNG_DPI if fmt == "png" else 72,
                    metadata={"Date": None} if fmt == "svg" else {"Software": None}, **options)
    # The layout is settled by the first rendering; solving it again for the next format
    # would double the time and could move things between the PNG and the SVG.
    fig.set_layout_engine("none")
    return buffer.getvalue()


def save_figures(figures: Figures, folder: Path) -> list[Path]:
    """Each figure as PNG and SVG in folder; returns the paths written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create figure directory {folder}: {exc.strerror}") from None
    written = []
    for name, fig in figures.figures.items():
        for fmt in ("png", "svg"):
            path = folder / f"{figures.stem(name)}.{fmt}"
            data = render(fig, fmt)
            results.write_atomically(path, lambda tmp, d=data: tmp.write_bytes(d))
            written.append(path)
    return written


def plot_runs(folders: list[Path | str], out: Path | str | None = None,
              baseline_backend: str | None = None) -> tuple[list[Path], dict[str, str]]:
    """`qkbench plot`: the figures of one or several runs, as PNG and SVG in `out` (default:
    the first run directory's figures/). Returns (paths written, {figure: why not drawn})."""
    paths = [Path(f) for f in folders]
    runs = load_runs(paths)
    target = Path(out) if out is not None else paths[0] / "figures"
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory")
    figures = make_figures(runs, baseline_backend)
    return save_figures(figures, target), figures.skipped
