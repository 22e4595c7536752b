"""Does the measurement hold on this machine? The harness measured, side by side in one sitting.

Runs a config R times (default: configs/default.yaml, six runs) and, in the same sitting, a small
two-threaded sweep inside a CPU-quota cgroup, then reports:

* **quiet machine** — per run: wall time, the timed work's share of it and the rest of the split
  (meta.json time_split_s); the median `unfit_share` of ok cells and the share of all rounds set
  aside (and why: sample column set_aside_cause); ok cells with fewer kept samples than
  min_samples; the machine check's "cannot judge" groups; and, per cause, how much slower the
  samples set aside ran than the same cell's kept samples (a check that sets aside rounds no
  slower than the rest is throwing good data away);
* **throttling caught** — the share of rounds overlapping throttling (from an independent poll
  of the cgroup's cpu.stat, as tests/test_cgroup_throttling.py does) that were set aside naming
  it (skipped where no cgroup cpu controller is writable: not root, not Linux);
* **percent of peak** — the highest `pct_peak` and the rows flagged `above_peak`;
* **stability** — across the runs, the spread (max/min) of each cell's median and of its ratio
  to numpy: ratios should spread less than absolute times;
* **A/A false alarms** of `compare` on unchanged code — one run a side (up to --pairs pairs) and
  three runs pooled a side (disjoint triples of the six runs: 10 splits), raw and normalised by
  numpy, with the machine's own shift between the sides (calibration readings).

    python benchmarks/harness_check.py                       # default config, 6 runs
    python benchmarks/harness_check.py --config quick --runs 6 --pairs 10 --keep results/hc

Run on an otherwise idle machine for figures about the tool; the load average is printed, since
on a busy one the figures describe the machine as much as the tool.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qkbench.analysis.verdicts import Rule  # noqa: E402
from qkbench.analysis.compare import compare_runs  # noqa: E402


def run_once(config: str, out: Path, prefix: list[str] | None = None) -> tuple[Path, float]:
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                  "")]))
    command = [*(prefix or []), sys.executable, "-m", "qkbench", "run", config, "--out",
               str(out), "--quiet", "--no-plots"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    if not (out / "summary.parquet").is_file():
        raise SystemExit(f"run failed ({result.returncode}): {result.stderr[-1500:]}")
    return out, time.monotonic() - started


def quiet_figures(run: Path) -> dict[str, object]:
    summary = pd.read_parquet(run / "summary.parquet")
    samples = pd.read_parquet(run / "samples.parquet")
    meta = json.loads((run / "meta.json").read_text())
    ok = summary[summary["status"] == "ok"]
    min_samples = meta["config"]["timing"]["min_samples"]
    rounds = samples.groupby(["backend", "dtype", "n", "m", "d_k", "round"], dropna=False).agg(
        kept=("machine_fit", "all"), cause=("set_aside_cause", "first"))
    split = meta.get("time_split_s", {})
    wall = meta.get("wall_s") or float("nan")
    causes = rounds.loc[~rounds["kept"], "cause"].value_counts().to_dict()
    return {"wall_s": round(wall, 1),
            "timed_share": round(split.get("timed work", 0.0) / wall, 3) if wall else None,
            "split_s": {k: round(v, 1) for k, v in sorted(split.items(), key=lambda kv: -kv[1])},
            "median_unfit_share": float(ok["unfit_share"].median()) if len(ok) else None,
            "rounds_set_aside": round(float((~rounds["kept"]).mean()), 4) if len(rounds) else 0,
            "set_aside_by_cause": causes,
            "ok_cells": len(ok),
            "ok_cells_below_min_samples": int((ok["samples"] < min_samples).sum()),
            "unconverged_reasons": int(ok["reason"].fillna("").str.startswith(
                "unconverged").sum()),
            "cannot_judge_cells": int(ok["machine_check"].fillna("").str.startswith(
                "cannot judge").sum()),
            "check_stopped_for_cost_cells": int(ok["machine_check"].fillna("").str.startswith(
                "stopped after").sum()),
            "max_pct_peak": (None if ok["pct_peak"].isna().all()
                             else round(float(ok["pct_peak"].max()), 1)),
            "above_peak_rows": int(ok["above_peak"].fillna(False).astype(bool).sum()),
            "set_aside_slowdown": set_aside_slowdown(samples),
            "calibration": meta.get("calibration")}


def set_aside_slowdown(samples: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per cause: over the cells with samples set aside for it, the quartiles of (median of
    those samples / median of the cell's kept samples)."""
    cells = [c for c in ("backend", "dtype", "n", "m", "d_k", "phase", "cache",
                         "threads_requested", "batch", "heads", "kv_heads", "causal", "preset")
             if c in samples]
    cause = samples["set_aside_cause"].astype("string").fillna("")
    ratios: dict[str, list[float]] = {}
    for _, cell in samples.assign(_cause=cause).groupby(cells, dropna=False):
        kept = cell.loc[cell["_cause"] == "", "seconds"]
        if len(kept) < 3:
            continue
        for name, aside in cell[cell["_cause"] != ""].groupby("_cause"):
            ratios.setdefault(name, []).append(float(aside["seconds"].median() / kept.median()))
    return {name: {"cells": len(values),
                   **{q: round(float(np.quantile(values, f)), 3)
                      for q, f in (("q1", 0.25), ("median", 0.5), ("q3", 0.75))}}
            for name, values in sorted(ratios.items())}


def throttling_figures(folder: Path) -> dict[str, object]:
    """The cgroup sweep of tests/test_cgroup_throttling.py, with its ground truth."""
    from tests import test_cgroup_throttling as fault

    cgroup = fault._make_cgroup()
    if cgroup is None:
        return {"skipped": "no writable cgroup cpu controller here"}
    try:
        quota = int((cgroup / "cpu.cfs_quota_us").read_text()) / fault.PERIOD_US \
            if (cgroup / "cpu.cfs_quota_us").exists() else None
        summary, samples, stretches = fault._sweep(folder, cgroup)
    finally:
        fault._remove(cgroup)
    rounds = fault._rounds(samples)
    hit = [any(min(end, t1) - max(start, t0) > 0.001 for t0, t1 in stretches)
           for start, end in zip(rounds["start"], rounds["end"])]
    rounds = rounds.assign(hit=hit)
    throttled = rounds[rounds["hit"]]
    return {"quota_cores": quota, "rounds": len(rounds), "throttled_rounds": len(throttled),
            "caught": round(float((~throttled["kept"]).mean()), 3) if len(throttled) else None,
            "set_aside_without_throttling_seen": int((~rounds["kept"] & ~rounds["hit"]).sum()),
            "row_causes": summary["set_aside_causes"].tolist()}


def stability(runs: list[Path]) -> dict[str, float]:
    """Median over cells of max/min across runs: of the median, and of the ratio to numpy."""
    frames = []
    for index, run in enumerate(runs):
        summary = pd.read_parquet(run / "summary.parquet")
        summary = summary[summary["status"] == "ok"].assign(run=index)
        key = ["dtype", "n", "m", "d_k"]
        numpy = summary[summary["backend"] == "numpy"].set_index(key)["median_s"]
        summary = summary.join(numpy.rename("numpy_s"), on=key)
        frames.append(summary.assign(ratio=summary["median_s"] / summary["numpy_s"]))
    every = pd.concat(frames)
    every = every[every["backend"] != "numpy"]
    cell = ["backend", "dtype", "n", "m", "d_k"]
    spread = every.groupby(cell).agg(t_max=("median_s", "max"), t_min=("median_s", "min"),
                                     r_max=("ratio", "max"), r_min=("ratio", "min"))
    return {"median_time_spread": round(float((spread["t_max"] / spread["t_min"]).median()), 3),
            "max_time_spread": round(float((spread["t_max"] / spread["t_min"]).max()), 3),
            "median_ratio_spread": round(float((spread["r_max"] / spread["r_min"]).median()), 3),
            "max_ratio_spread": round(float((spread["r_max"] / spread["r_min"]).max()), 3)}


def _pool(members: tuple[Path, ...], folder: Path) -> Path:
    pool = folder / "-".join(p.name for p in members)
    if not pool.exists():
        pool.mkdir(parents=True)
        for member in members:
            (pool / member.name).symlink_to(member.resolve())
    return pool


def false_alarms(pairs: list[tuple[Path, Path]], normalize_by: str | None) -> dict[str, object]:
    slower = cells = alarmed = shifted = 0
    for base, cand in pairs:
        comparison = compare_runs(base, cand, Rule(), normalize_by)
        counts = comparison.counts()
        slower += counts["slower"]
        cells += sum(counts[v] for v in ("slower", "faster", "same"))
        alarmed += bool(counts["slower"])
        shifted += comparison.machine_shift_exceeds_threshold
    return {"pairs": len(pairs), "pairs_with_an_alarm": alarmed,
            "slower_cells": slower, "cells": cells,
            "pairs_where_the_machine_shifted_beyond_the_threshold": shifted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="config name or path")
    parser.add_argument("--runs", type=int, default=6, help="runs of the config (>= 2)")
    parser.add_argument("--pairs", type=int, default=10, help="one-run-a-side pairs to compare")
    parser.add_argument("--skip-cgroup", action="store_true", help="no CPU-quota sweep")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--runs-from", type=Path,
                        help="analyse the run directories kept in this folder (run0, run1, "
                        "...) instead of running the config again")
    args = parser.parse_args()
    # A timeout's SIGTERM must still run the `finally` that removes the quota cgroup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="qkbench-harness-check-"))
    folder.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"load_average_start": os.getloadavg(),
                                 "config": args.config, "runs": args.runs}
    try:
        runs = []
        if args.runs_from is not None:
            runs = sorted(p for p in args.runs_from.glob("run*")
                          if (p / "summary.parquet").is_file())[:args.runs]
            report["runs"] = len(runs)
        for index in range(len(runs), args.runs if args.runs_from is None else len(runs)):
            run, seconds = run_once(args.config, folder / f"run{index}")
            runs.append(run)
            print(f"run {index + 1}/{args.runs}: {seconds:.0f} s", file=sys.stderr)
        report["quiet"] = [quiet_figures(run) for run in runs]
        report["stability"] = stability(runs)
        if not args.skip_cgroup:
            cgroup_folder = folder / "cgroup"
            cgroup_folder.mkdir(exist_ok=True)
            report["throttling"] = throttling_figures(cgroup_folder)
        singles = list(itertools.combinations(runs, 2))[:args.pairs]
        pooled = []
        if len(runs) >= 6:
            six = runs[:6]
            for triple in itertools.combinations(six[1:], 2):
                first = (six[0], *triple)
                rest = tuple(r for r in six if r not in first)
                pooled.append((_pool(first, folder / "pools"), _pool(rest, folder / "pools")))
        report["aa"] = {}
        for label, normalize_by in (("raw", None), ("normalised by numpy", "numpy")):
            report["aa"][label] = {"one run a side": false_alarms(singles, normalize_by)}
            if pooled:
                report["aa"][label]["three runs pooled a side"] = false_alarms(pooled,
                                                                              normalize_by)
        report["load_average_end"] = os.getloadavg()
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
