"""Is the `numba` backend as fast as BLAS? Measured side by side, in one interleaved run.

Runs configs/numba-vs-blas.yaml with `qkbench run` (every backend of a cell sampled in turns,
so the machine's drift falls on all of them alike) and prints, per cell, each backend's
GFLOP/s, its ratio to numpy's in the same cell, and its percentage of the machine's measured
peak (`qkbench peaks`, measured first if it never was).

    python benchmarks/numba_vs_blas.py [--config configs/numba-vs-blas.yaml] [--out DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from qkbench.machine import peaks
from qkbench.machine.environment import fingerprint
from qkbench.records.results import CELL_KEY, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/numba-vs-blas.yaml")
    parser.add_argument("--out", type=Path, help="keep the run directory here")
    args = parser.parse_args()
    environment = fingerprint()
    if peaks.load(environment["hardware_key"]) is None:
        subprocess.run([sys.executable, "-m", "qkbench", "peaks"], check=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="numba-vs-blas-")) / "run"
    subprocess.run([sys.executable, "-m", "qkbench", "run", args.config, "--out", str(out),
                    "--quiet"], check=False)
    summary, _, meta = load_run(out)
    ok = summary[summary["status"] == "ok"]
    group = [c for c in CELL_KEY if c != "backend"]
    numpy_gflops = ok[ok["backend"] == "numpy"].set_index(group)["gflops"]
    table = ok.assign(vs_numpy=[row.gflops / numpy_gflops.get(tuple(getattr(row, c)
                                                                     for c in group), float("nan"))
                                for row in ok.itertuples()])
    wide = table.pivot_table(index=["dtype", "n", "d_k"], columns="backend",
                             values=["gflops", "vs_numpy", "pct_peak"], aggfunc="first")
    pd.set_option("display.width", 200)
    print(f"machine: {environment['cpu']['model']}, {environment['cpu']['logical_cores']} "
          f"cores, flags {','.join(environment['cpu'].get('flags', []))}")
    print(f"peaks: {meta['environment'].get('peaks', {}).get('cpu')}\n")
    print(wide.round(2).to_string())
    numba = table[table["backend"] == "numba"]["vs_numpy"]
    print(f"\nnumba / numpy throughput: median {numba.median():.2f}x, "
          f"min {numba.min():.2f}x, max {numba.max():.2f}x over {len(numba)} cells")
    print(f"run directory: {out}")


if __name__ == "__main__":
    main()
