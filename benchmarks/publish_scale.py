"""How long does `qkbench publish` take on a store of realistic size, and how heavy are pages?

Synthetic run directories (the tables and meta.json a real run writes, with lognormal noise
around fixed medians): R runs, half on each of two machines, each run C cells (backends ×
sizes), one commit per run and a day apart; one cell gets 30% slower from the middle commit
on the first machine. The runs are filed with `qkbench store add`, then the store is published
with `--normalize-by numpy`. Prints the wall time of each, the largest page, and whether the
known slowdown is on the regressions page.

    python benchmarks/publish_scale.py                 # 200 runs × 20 cells
    python benchmarks/publish_scale.py --runs 40 --keep /tmp/site-demo

Targets (issue 27): publish ≤ 30 s on 2 cores, every page ≤ 2 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BACKENDS = ("numpy", "numba", "torch-cpu", "other", "subject")
SIZES = (128, 256, 512, 1024)
MACHINES = ({"model": "Synthetic CPU A", "logical_cores": 2},
            {"model": "Synthetic CPU B", "logical_cores": 8})


def write_run(folder: Path, index: int, machine: int, rng: np.random.Generator,
              slow_from: int, noise: float) -> None:
    rows, samples = [], []
    machine_speed = 1.0 + 0.3 * machine
    for backend_number, backend in enumerate(BACKENDS):
        for n in SIZES:
            base = 1e-5 * (n / 128) ** 2 * (1 + backend_number) / machine_speed
            if backend == "subject" and n == 512 and machine == 0 and index >= slow_from:
                base *= 1.3
            median = base * float(np.exp(rng.normal(0, noise)))
            rows.append({"backend": backend, "device": "cpu", "dtype": "float32", "n": n,
                         "m": n, "d_k": 64, "status": "ok", "reason": "",
                         "median_s": median, "ci_low_s": median * 0.99,
                         "ci_high_s": median * 1.01, "samples": 8})
            samples += [{"backend": backend, "device": "cpu", "dtype": "float32", "n": n,
                         "m": n, "d_k": 64, "round": r, "t_start": float(r),
                         "seconds": median * float(np.exp(rng.normal(0, 0.01))), "calls": 1}
                        for r in range(8)]
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "summary.parquet", index=False)
    pd.DataFrame(rows).to_csv(folder / "summary.csv", index=False)
    pd.DataFrame(samples).to_parquet(folder / "samples.parquet", index=False)
    day = np.datetime64("2026-01-01T00:00:00") + np.timedelta64(index, "D")
    environment = {"created_utc": f"{day}+00:00", "hostname": f"host{machine}",
                   "git": {"commit": f"{index:04d}" + "c0ffee" * 6, "dirty": False},
                   "cpu": MACHINES[machine], "libraries": {"numpy": "2.0.0"},
                   "comparability_key": f"{machine}" * 12}
    meta = {"config": {"name": "synthetic"}, "environment": environment, "state": "finished",
            "schema_version": 2}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def qkbench(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "qkbench", *args], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"qkbench {' '.join(args)} failed: {result.stderr.strip()}")
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.02, help="run-to-run sd (log)")
    parser.add_argument("--keep", type=Path, help="keep the runs, store and site here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        rng = np.random.default_rng(27)
        per_machine = args.runs // 2
        runs = []
        for machine in (0, 1):
            for index in range(per_machine):
                folder = root / "runs" / f"m{machine}-run{index:04d}"
                write_run(folder, index, machine, rng, per_machine // 2, args.noise)
                runs.append(str(folder))
        add_s, _ = qkbench("store", "add", *runs, str(root / "store"))
        publish_s, result = qkbench("publish", str(root / "store"), "--out", str(root / "site"),
                                    "--normalize-by", "numpy",
                                    "--commit-url", "https://example.org/commit/{commit}")
        pages = list((root / "site").rglob("*.html"))
        largest = max(pages, key=lambda p: p.stat().st_size)
        found = json.loads((root / "site" / "regressions.json").read_text())["regressions"]
        known = [r for r in found if r["cell"].startswith("subject float32 n=512")]
        print(f"{len(runs)} runs × {len(BACKENDS) * len(SIZES)} cells, "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print(f"store add: {add_s:.1f} s   publish: {publish_s:.1f} s   ({result.stdout.strip()})")
        print(f"pages: {len(pages)}, largest {largest.stat().st_size / 1e6:.2f} MB "
              f"({largest.name}); shared script "
              f"{(root / 'site' / 'qkbench-chart.js').stat().st_size / 1e3:.1f} kB")
        print(f"open regressions: {len(found)}; the known 30% slowdown listed: {bool(known)}"
              + (f" at commit {known[0]['commit']}" if known else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
