"""Presentation: the trend plots of `qkbench history`, one per cell (analysis/history.py finds
the steps; this only draws them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from qkbench.analysis.history import FoundStep, cell_label


def write_plots(table: pd.DataFrame, steps: Sequence[FoundStep], folder: Path,
                normalize_by: str | None) -> list[Path] | None:
    """One trend plot per cell; None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    except ImportError:
        return None
    written = []
    by_cell = {}
    for step in steps:
        by_cell.setdefault((step.config, step.cell), []).append(step)
    for (config, cell), series in table.groupby(["config", "_cell"], sort=False):
        series = series[series["value"].notna()].sort_values("run_index")
        if series.empty:
            continue
        fig = Figure(figsize=(8, 4), layout="constrained")
        ax = fig.add_subplot()
        x = np.arange(len(series))
        y = series["value"].to_numpy(float)
        if normalize_by is None:
            scale = 1e-3 if np.nanmedian(y) >= 1e-3 else 1e-6
            unit = "ms" if scale == 1e-3 else "µs"
            low = (y - series["ci_low_s"].to_numpy(float)) / scale
            high = (series["ci_high_s"].to_numpy(float) - y) / scale
            ax.errorbar(x, y / scale, yerr=np.nan_to_num(np.vstack([low, high])), fmt="o-",
                        capsize=3)
            ax.set_ylabel(f"median time per call ({unit}, 95% interval)")
        else:
            ax.plot(x, y, "o-")
            ax.set_ylabel(f"time ÷ {normalize_by}")
        runs, paths = list(series["run"]), list(series["_path"])
        for step in by_cell.get((config, cell), []):
            if step.path in paths:
                ax.axvline(paths.index(step.path) - 0.5, color="tab:red", linestyle="--")
        ax.set_xticks(x, [c or r[:15] for c, r in zip(series["commit"].str[:7], runs)],
                      rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{config}: {cell_label(cell)}", fontsize=9)
        path = folder / (config + "_" + _slug(cell_label(cell)) + ".png")
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)
