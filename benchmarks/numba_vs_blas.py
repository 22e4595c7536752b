"""Is the `numba` backend as fast as BLAS on every path? Measured side by side, interleaved.

Runs configs/numba-vs-blas.yaml with `qkbench run` (every backend of a cell sampled in turns,
so the machine's drift falls on all of them alike) and prints, per cell, each backend's
GFLOP/s and its share of the machine's peak; then, per dtype and numba path, the median and
worst ratio to numpy and to torch-cpu in the same cells. Last, the kernel's first call in a
fresh process: cold (empty Numba cache: the compile) and warm (loaded from the cache).

    python benchmarks/numba_vs_blas.py [--config configs/numba-vs-blas.yaml] [--out DIR]
                                       [--first-call-paths avx2,portable] [--no-first-call]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from qkbench.machine import peaks
from qkbench.machine.environment import fingerprint
from qkbench.records.run import load_run

REPO = Path(__file__).resolve().parent.parent
BASELINES = ("numpy", "torch-cpu")


def machine_peak(environment: dict) -> dict[str, float]:
    """GFLOP/s per dtype that the 'share of peak' columns divide by: the CPU's physical peak
    (cores × FMA units × lanes × 2 × clock, qkbench.machine.cpu_peak), which no backend can
    beat, never below what was measured on it (`qkbench peaks`)."""
    by_device, _ = peaks.for_run(environment)
    return {dtype: by_device[("cpu", dtype)] for dtype in ("float32", "float64")
            if ("cpu", dtype) in by_device}


def ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Per dtype and numba backend, the median and worst throughput ratio to each baseline."""
    wide = table.pivot_table(index=["dtype", "n", "m", "d_k"], columns="backend",
                             values="gflops", aggfunc="first")
    rows = []
    for label in [c for c in wide.columns if c.startswith("numba")]:
        for dtype, cells in wide.groupby(level="dtype"):
            row = {"backend": label, "dtype": dtype}
            for base in BASELINES:
                if base in cells:
                    ratio = (cells[label] / cells[base]).dropna()
                    row[f"vs_{base}_median"] = ratio.median()
                    row[f"vs_{base}_worst"] = ratio.min()
            rows.append(row)
    return pd.DataFrame(rows)


def first_call(path: str, dtype: str, cache_dir: Path) -> float:
    """Seconds of the first `numba` call in a new process, with NUMBA_CACHE_DIR = cache_dir."""
    code = ("import time, numpy as np\n"
            "from qkbench.backends.numba_backend import NumbaBackend\n"
            f"q = np.ones((64, 64), '{dtype}')\n"
            "start = time.perf_counter(); NumbaBackend().scores(q, q)\n"
            "print(time.perf_counter() - start)\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "QKBENCH_NUMBA_PATH": path,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True,
                          capture_output=True, text=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/numba-vs-blas.yaml"))
    parser.add_argument("--out", type=Path, help="keep the run directory here")
    parser.add_argument("--first-call-paths", default="",
                        help="paths whose cold and warm first call to time (default: the "
                             "detected one)")
    parser.add_argument("--no-first-call", action="store_true")
    args = parser.parse_args()
    environment = fingerprint()
    peak = machine_peak(environment)
    out = args.out or Path(tempfile.mkdtemp(prefix="numba-vs-blas-")) / "run"
    subprocess.run([sys.executable, "-m", "qkbench", "run", args.config, "--out", str(out),
                    "--quiet"], check=False)
    summary = load_run(out).summary
    ok = summary[summary["status"] == "ok"]
    table = ok.assign(pct_of_peak=100 * ok["gflops"] / ok["dtype"].map(peak))
    wide = table.pivot_table(index=["dtype", "n", "m", "d_k"], columns="backend",
                             values=["gflops", "pct_of_peak"], aggfunc="first")
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(f"machine: {environment['cpu']['model']}, {environment['cpu']['logical_cores']} "
          f"logical cores; peak GFLOP/s {peak}")
    print(wide.round(1).to_string())
    print("\nthroughput ratios in the same cells (median, worst):")
    print(ratios(table).round(2).to_string(index=False))
    failed = summary[summary["status"] != "ok"]
    if len(failed):
        print(f"\n{len(failed)} cells not ok:")
        print(failed[["backend", "dtype", "n", "d_k", "status", "reason"]].to_string(index=False))
    print(f"run directory: {out}")
    if not args.no_first_call:
        from qkbench.backends.numba_paths import detected_path

        for path in (args.first_call_paths or detected_path()).split(","):
            for dtype in ("float32", "float64"):
                with tempfile.TemporaryDirectory() as cache:
                    cold = first_call(path, dtype, Path(cache))
                    warm = first_call(path, dtype, Path(cache))
                print(json.dumps({"first_call": path, "dtype": dtype, "cold_s": round(cold, 2),
                                  "warm_s": round(warm, 3)}))


if __name__ == "__main__":
    main()
