"""Are backend ratios stable across runs when absolute times are not? (interleaving's promise)

Runs one config several times with `qkbench run`, then for every cell prints the spread across
runs of the absolute median (max/min) and of the ratio of that median to the reference
backend's median in the same run and group (max/min). Interleaved sampling makes the machine's
drift fall on every backend of a group alike, so the second spread should be far smaller.

    python benchmarks/ratio_stability.py [CONFIG] [--runs 3] [--reference numpy] [--threads 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from harness.results import CELL_KEY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/stability.yaml")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reference", default="numpy")
    parser.add_argument("--threads", type=int, help="override the config's threads axis")
    args = parser.parse_args()
    group_key = [c for c in CELL_KEY if c != "backend"]
    tables = []
    with tempfile.TemporaryDirectory() as scratch:
        config = args.config
        if args.threads:
            data = yaml.safe_load(Path(config).read_text())
            data["sweep"]["threads"] = [args.threads]
            config = str(Path(scratch) / "config.yaml")
            Path(config).write_text(yaml.safe_dump(data))
        for run in range(args.runs):
            out = Path(scratch) / f"run{run}"
            subprocess.run([sys.executable, "-m", "harness", "run", config, "--out",
                            str(out), "--quiet", "--no-plots"], check=False,
                           stdout=subprocess.DEVNULL)
            summary = pd.read_parquet(out / "summary.parquet")
            summary = summary[summary["status"] == "ok"].copy()
            reference = summary[summary["backend"] == args.reference].set_index(group_key)
            summary["ratio"] = [row.median_s / reference.loc[tuple(getattr(row, c) for c in
                                                                   group_key), "median_s"]
                                for row in summary.itertuples()]
            summary["run"] = run
            tables.append(summary)
    runs = pd.concat(tables)
    spread = runs.groupby(CELL_KEY, dropna=False).agg(
        time_spread=("median_s", lambda s: s.max() / s.min()),
        ratio_spread=("ratio", lambda s: s.max() / s.min()),
        ratio_median=("ratio", "median"), runs=("run", "nunique")).reset_index()
    spread = spread[spread["backend"] != args.reference]
    print(spread[["backend", "dtype", "n", "d_k", "runs", "ratio_median", "time_spread",
                  "ratio_spread"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nmedian over cells: absolute-time spread {spread['time_spread'].median():.3f}x, "
          f"ratio spread {spread['ratio_spread'].median():.3f}x (max/min across "
          f"{args.runs} runs); other processes' load while sampling: up to "
          f"{runs['foreign_load'].max():.2f} cores")


if __name__ == "__main__":
    main()
