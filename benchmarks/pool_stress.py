"""Does every healthy cell finish when many backends crash, hang and raise beside it?

The worker pool under stress: numpy and one `FaultAtSize` plugin per fault (tests/plugins/
faults_at_size.py: healthy at every size but one, where each fails in its own way: a hang, a
segfault, an exit, an exception, MemoryError, a NaN, a slow prepare), several worker processes
each, a tight time limit, on whatever cores the machine has. The sweep runs R times in a row
through the CLI; each run's cells are checked against what each must be, and the script prints
the count of healthy cells that did not end `ok` and of faulty cells with the wrong status.

    python benchmarks/pool_stress.py                 # 20 runs, 3 processes, timeout_s 20
    python benchmarks/pool_stress.py --runs 5 --processes 2 --timeout 10 --keep /tmp/stress

Exit 0 when every status was right in every run, 1 otherwise. tests/test_stress.py runs one
smaller sweep of the same kind.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.plugins.faults_at_size import FAULT_STATUS, stress_config, wrong_cells  # noqa: E402

# Every fault but "turns-slow", which spends most of its cell's time limit by design.
STRESS_FAULTS = [fault for fault in FAULT_STATUS if fault != "turns-slow"]


def run_once(config: Path, out: Path) -> tuple[pd.DataFrame, float, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "qkbench", "run", str(config), "--out",
                           str(out), "--no-progress", "--no-plots"], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.monotonic() - began
    if not (out / "summary.parquet").exists():
        raise SystemExit(f"run failed without a summary (exit {done.returncode}): "
                         f"{done.stderr.strip()[-400:]}")
    return pd.read_parquet(out / "summary.parquet"), wall, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=20.0, help="timeout_s of every cell")
    parser.add_argument("--budget", type=float, default=1.0, help="budget_s of every cell")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--at-n", type=int, default=512, help="the size where faults happen")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="qkbench-stress-"))
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "stress.yaml"
    config.write_text(yaml.safe_dump(stress_config(
        STRESS_FAULTS, args.sizes, args.at_n, args.processes, args.timeout, args.budget)))
    print(f"{args.runs} runs of {len(STRESS_FAULTS) + 1} backends x {args.processes} processes, "
          f"n = {args.sizes}, timeout_s {args.timeout}, budget_s {args.budget}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    healthy_failed = faulty_wrong = 0
    for index in range(args.runs):
        summary, wall, code = run_once(config, folder / f"run-{index:02d}")
        wrong = wrong_cells(summary, args.at_n)
        healthy = wrong[wrong["expected"] == "ok"]
        healthy_failed += len(healthy)
        faulty_wrong += len(wrong) - len(healthy)
        print(f"run {index + 1:2d}: {wall:6.1f} s, exit {code}, {len(summary)} cells, "
              f"{len(wrong)} wrong")
        if len(wrong):
            print(wrong.to_string(index=False, max_colwidth=90))
    print(f"healthy cells not ok: {healthy_failed}; faulty cells with the wrong status: "
          f"{faulty_wrong} (over {args.runs} runs); load average now "
          f"{os.getloadavg()[0]:.1f}")
    return 0 if healthy_failed == faulty_wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
