"""Run directories → figures (PNG and SVG), one run or many machines in one place.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure

from qkbench.errors import UsageError
from qkbench.present.figures import attention as attention_plots
from qkbench.present.figures.noise import cell_samples, noisiest, noisiest_cells
from qkbench.present.figures.roofline import bandwidths, roofline
from qkbench.present.figures.speedup import (
    crossover_words,
    crossovers,
    gpu_cpu_speedup,
    gpu_over_cpu,
    speedup,
    speedups,
)
from qkbench.present.figures.style import PNG_DPI, DEFAULT_BASELINE_BACKEND, NoFigure
from qkbench.present.figures.timing import throughput, time_vs_size
from qkbench.present.runset import RunInfo, RunSet, load_runs, machine_hardware
from qkbench.records.results import write_atomically

__all__ = ["CAPTIONS", "Figures", "RunInfo", "RunSet", "bandwidths", "cell_samples",
           "crossover_words", "crossovers", "gpu_cpu_speedup", "gpu_over_cpu", "load_runs",
           "machine_hardware", "make_figures", "noisiest", "noisiest_cells", "plot_runs",
           "render", "roofline", "save_figures", "speedup", "speedups", "throughput",
           "time_vs_size"]

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
    builders.update(attention_plots.builders(runs))  # only for runs with attention cells
    figures, skipped = {}, {}
    for name, build in builders.items():
        try:
            figures[name] = build(runs)
        except NoFigure as exc:
            skipped[name] = str(exc)
    return Figures(figures, skipped, baseline)


def render(fig: Figure, fmt: str, **options: Any) -> bytes:
    """One figure as PNG or SVG bytes (SVG text stays text: smaller, searchable)."""
    buffer = io.BytesIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "qkbench"}):
        fig.savefig(buffer, format=fmt, dpi=PNG_DPI if fmt == "png" else 72,
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
            write_atomically(path, lambda tmp, d=data: tmp.write_bytes(d))
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

