"""Does `qkbench find` return the right commit of a 16-commit history in ≤ 5 paired runs?

Each trial makes the test repository of tests/find_repo.py (a plugin backend; 16 commits, the
first one GOOD; from commit k on, scores() repeats its product `--repeats` times) in a fresh
folder with a fresh environment cache, and runs `qkbench find FIRST main` on its one small cell
(tests/find_repo.CONFIG). k goes round the positions given, so the search ends in different
places (k = 15: the answer is BAD itself, which costs the confirming run). Prints one line per
trial (k, the commit found, right or not, paired runs, wall time, load average) and a summary.

    python benchmarks/find_target.py --trials 10
    python benchmarks/find_target.py --trials 5 --positions 11 --packaged   # pip per commit

Run it under `flock /work/measure.lock` on a shared machine. Target (issue 27): the right
commit in ≤ 5 paired runs, with 16 commits.
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

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.find_repo import CONFIG, make_repo  # noqa: E402


def trial(folder: Path, slow_from: int, repeats: int, packaged: bool) -> dict:
    commits = make_repo(folder / "repo", commits=16, slow_from=slow_from, repeats=repeats,
                        packaged=packaged)
    config = dict(CONFIG, backends=["slowkernel"]) if packaged else CONFIG
    (folder / "find.yaml").write_text(yaml.safe_dump(config))
    load = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "qkbench", "find", commits[0], "main", "--repo",
         str(folder / "repo"), "--config", str(folder / "find.yaml"), "--backend",
         "slowkernel" if packaged else "kernel", "--cache", str(folder / "cache"),
         "--out", str(folder / "out")], capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    found = json.loads((folder / "out" / "find.json").read_text()) \
        if (folder / "out" / "find.json").is_file() else {}
    return {"slow_from": slow_from, "exit": done.returncode, "right":
            found.get("first_bad") == commits[slow_from],
            "found": commits.index(found["first_bad"]) if found.get("first_bad") in commits
            else None, "runs": found.get("runs"), "wall_s": wall,
            "load": (load, os.getloadavg()[0]), "stderr": done.stderr.strip()[-300:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--positions", type=int, nargs="+", default=[11, 3, 8, 15, 1, 13, 6])
    parser.add_argument("--repeats", type=int, default=3, help="the slowdown: products per call")
    parser.add_argument("--packaged", action="store_true",
                        help="an installable package with an entry point (pip per commit)")
    args = parser.parse_args()
    rows = []
    for number in range(args.trials):
        slow_from = args.positions[number % len(args.positions)]
        with tempfile.TemporaryDirectory(prefix="qkbench-find-target-") as folder:
            row = trial(Path(folder), slow_from, args.repeats, args.packaged)
        rows.append(row)
        print(f"trial {number + 1}: slower from commit {slow_from}, found {row['found']} "
              f"({'right' if row['right'] else 'WRONG'}), {row['runs']} paired run(s), "
              f"{row['wall_s']:.1f} s, load average {row['load'][0]:.1f}-{row['load'][1]:.1f}"
              + (f", exit {row['exit']}: {row['stderr']}" if row["exit"] else ""), flush=True)
    right = sum(row["right"] for row in rows)
    runs = [row["runs"] for row in rows if row["runs"] is not None]
    walls = sorted(row["wall_s"] for row in rows)
    loads = [value for row in rows for value in row["load"]]
    print(f"\n{right}/{len(rows)} right; paired runs {min(runs)}-{max(runs)} (≤ 5 in "
          f"{sum(r <= 5 for r in runs)}/{len(runs)}); wall time {walls[0]:.1f}-{walls[-1]:.1f} s "
          f"(median {walls[len(walls) // 2]:.1f} s); load average {min(loads):.1f}-"
          f"{max(loads):.1f} on {os.cpu_count()} cores")
    return 0 if right == len(rows) and max(runs) <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
