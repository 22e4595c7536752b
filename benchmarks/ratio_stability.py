"""Are backend ratios stable across runs when absolute times are not? (interleaving's promise)

Runs a config several times with `qkbench run`, then for every cell prints the spread across
runs of the absolute median (max/min) and of the ratio of that median to the reference
backend's median in the same run and group (max/min). Interleaved sampling makes the machine's
drift fall on every backend of a group alike, so the second spread should be far smaller.

With `--machine-check both` every run is made twice, back to back, once with the machine check
on and once with it off (`timing.machine_check`), so the two variants see the same stretch of
the machine's drift and their spreads can be compared side by side.

    python benchmarks/ratio_stability.py [CONFIG] [--runs 3] [--reference numpy] [--threads 1]
                                         [--machine-check on|off|both]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from qkbench.cell_key import CELL_KEY

VARIANTS = {"on": [True], "off": [False], "both": [True, False]}


def _config_variant(config: str, scratch: Path, threads: int | None, check: bool) -> str:
    data = yaml.safe_load(Path(config).read_text())
    if threads:
        data["sweep"]["threads"] = [threads]
    data.setdefault("timing", {})["machine_check"] = check
    path = scratch / f"config-check-{check}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _run(config: str, out: Path, reference: str, group_key: list[str]) -> pd.DataFrame:
    subprocess.run([sys.executable, "-m", "qkbench", "run", config, "--out", str(out),
                    "--quiet", "--no-plots"], check=False, stdout=subprocess.DEVNULL)
    summary = pd.read_parquet(out / "summary.parquet")
    summary = summary[summary["status"] == "ok"].copy()
    ref = summary[summary["backend"] == reference].set_index(group_key)
    summary["ratio"] = [row.median_s / ref.loc[tuple(getattr(row, c) for c in group_key),
                                               "median_s"]
                        for row in summary.itertuples()]
    summary["wall_s"] = json.loads((out / "meta.json").read_text()).get("wall_s")
    return summary


def _report(runs: pd.DataFrame, reference: str, label: str) -> None:
    spread = runs.groupby(CELL_KEY, dropna=False).agg(
        time_spread=("median_s", lambda s: s.max() / s.min()),
        ratio_spread=("ratio", lambda s: s.max() / s.min()),
        ratio_median=("ratio", "median"), runs=("run", "nunique")).reset_index()
    reference_spread = spread.loc[spread["backend"] == reference, "time_spread"].median()
    spread = spread[spread["backend"] != reference]
    print(f"\n== machine check {label} ==")
    print(spread[["backend", "dtype", "n", "d_k", "runs", "ratio_median", "time_spread",
                  "ratio_spread"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    unfit = runs["unfit_share"].mean() if "unfit_share" in runs else float("nan")
    print(f"median over cells: absolute-time spread {spread['time_spread'].median():.3f}x, "
          f"ratio spread {spread['ratio_spread'].median():.3f}x (max/min across "
          f"{runs['run'].nunique()} runs; {reference}'s own times {reference_spread:.3f}x); "
          f"other processes' load while sampling: up to "
          f"{runs['foreign_load'].max():.2f} cores; samples set aside: {unfit:.1%}; wall time "
          f"per run {runs.groupby('run')['wall_s'].first().mean():.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/stability.yaml")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reference", default="numpy")
    parser.add_argument("--threads", type=int, help="override the config's threads axis")
    parser.add_argument("--machine-check", choices=sorted(VARIANTS), default="on")
    args = parser.parse_args()
    group_key = [c for c in CELL_KEY if c != "backend"]
    tables: dict[bool, list[pd.DataFrame]] = {check: [] for check in VARIANTS[args.machine_check]}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        configs = {check: _config_variant(args.config, scratch, args.threads, check)
                   for check in tables}
        for run in range(args.runs):
            for check, config in configs.items():
                summary = _run(config, scratch / f"run{run}-{check}", args.reference, group_key)
                tables[check].append(summary.assign(run=run))
    for check, runs in tables.items():
        _report(pd.concat(runs), args.reference, "on" if check else "off")


if __name__ == "__main__":
    main()
