"""Step detection on a real history of this machine: one run per commit of a small project with
slowdowns of known size at known commits, and the steps that `qkbench history`'s detectors find.

The project is a git repository made here: a plugin backend `subject` (NumPy's product, then
busy for a set share of that product's own time, calibrated in prepare(), as
tests/plugins/slowed.py does) whose share changes at known commits, so that its time steps up by
5%, 10% and 25% (in an order drawn per series) at commits spread over the history. Each commit
is checked out (qkbench.bisect.builds, as `qkbench find` does: no build, its files on the path)
and measured by one `qkbench run` of the `ci` sweep shrunk to n = 256 with numpy and the
subject, one after another, as a nightly job would over a project's commits. The runs are then
read by `qkbench history`'s own code (analysis/history.py `gather`, `detect`), normalised by
numpy as docs/history.md recommends and raw, with each detector at its defaults (threshold
5%, 3 runs a side). A found step is right when it is within 2 runs of a true one and in its
direction (benchmarks/step_detection.py's rule).

    python benchmarks/real_history.py --series 2 --commits 30 --keep results/real-history
    python benchmarks/real_history.py --reuse results/real-history    # judge the runs again
    python benchmarks/real_history.py --series 3 --seed 1 --keep results/real-history-2

Run it under `flock /work/measure.lock`; the load average is printed with the results.
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
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qkbench.analysis.history import detect, gather  # noqa: E402
from qkbench.bisect.builds import build  # noqa: E402
from tests.find_repo import git  # noqa: E402

SIZES = (0.05, 0.10, 0.25)
TOLERANCE = 2
MODULE = '''"""histkernel at commit {number}: NumPy's product, then busy for {extra:.4f} of it."""

import time

import numpy as np

from qkbench import Backend

EXTRA = {extra!r}


class Kernel(Backend):
    name = "subject"
    dtypes = ("float32",)

    def prepare(self, q, k):
        q, k = np.ascontiguousarray(q), np.ascontiguousarray(k)
        times = []
        for _ in range(15):
            start = time.perf_counter()
            q @ k.T
            times.append(time.perf_counter() - start)
        self._extra_s = EXTRA * sorted(times)[7]
        return q, k

    def scores(self, q, k):
        s = q @ k.T
        until = time.perf_counter() + self._extra_s
        while time.perf_counter() < until:  # busy, as a slower kernel would be
            pass
        return s
'''


def make_project(folder: Path, commits: int, steps: dict[int, float]) -> list[str]:
    (folder / "histkernel").mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "history@example.com")
    git(folder, "config", "user.name", "history")
    level = 1.0
    for number in range(commits):
        level *= 1.0 + steps.get(number, 0.0)
        (folder / "histkernel" / "__init__.py").write_text(
            MODULE.format(number=number, extra=level - 1.0))
        git(folder, "add", "-A")
        git(folder, "commit", "-q", "-m", f"commit {number}")
    return git(folder, "rev-list", "--reverse", "HEAD").split()


def config(budget: float) -> dict:
    ci = yaml.safe_load((REPO / "configs" / "ci.yaml").read_text())
    ci["name"] = "history-ci"
    ci["sweep"]["n"] = [256]
    ci["backends"] = ["numpy", "histkernel:Kernel"]
    ci["timing"]["budget_s"] = budget
    return ci


def measure(folder: Path, commits: list[str], cfg: Path, cache: Path) -> list[Path]:
    runs = []
    for number, commit in enumerate(commits):
        environment = build(folder / "project", commit, cache, "histkernel:Kernel", "")
        run = folder / "runs" / f"{number:03d}-{commit[:10]}"
        variables = {**os.environ, "PYTHONPATH": os.pathsep.join(environment.paths)}
        done = subprocess.run([sys.executable, "-m", "qkbench", "run", str(cfg), "--out",
                               str(run), "--quiet", "--no-plots"], env=variables,
                              capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):
            raise SystemExit(f"commit {number}: qkbench run failed: {done.stderr[-400:]}")
        runs.append(run)
        print(f"  commit {number:2d} measured (load average {os.getloadavg()[0]:.1f})",
              flush=True)
    return runs


def judge(series_folder: Path) -> dict[str, dict]:
    """Per detector and view: (found, right) and, per true step size, (found, true)."""
    truth = json.loads((series_folder / "truth.json").read_text())
    steps = {int(k): v for k, v in truth["steps"].items()}
    runs = sorted((series_folder / "runs").iterdir())
    out = {}
    for view in ("norm", "raw"):
        table = gather(runs, "numpy" if view == "norm" else None)
        table = table[table["backend"] == "subject"]
        for detector in ("l1", "segmentation"):
            found = [s for s in detect(table, 0.05, 3, detector)]
            indices = {Path(p).name: i for i, p in enumerate(str(r) for r in runs)}
            marks = [(indices[Path(s.path).name], 1 if s.change > 0 else -1) for s in found]
            left = dict(steps)
            right, per_size = 0, {str(size): [0, 0] for size in SIZES}
            for size in steps.values():
                per_size[str(size)][1] += 1
            for index, direction in marks:
                match = [k for k in left if abs(k - index) <= TOLERANCE and direction > 0]
                if match:
                    right += 1
                    per_size[str(left.pop(match[0]))][0] += 1
            out[f"{detector} {view}"] = {"found": len(marks), "right": right,
                                         "sizes": per_size, "marks": marks}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2)
    parser.add_argument("--commits", type=int, default=30)
    parser.add_argument("--budget", type=float, default=0.5, help="timing.budget_s (ci: 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep the projects and runs here")
    parser.add_argument("--reuse", type=Path, nargs="+",
                        help="judge the runs kept by --keep again (one or more folders)")
    args = parser.parse_args()
    if args.reuse is not None:
        folders = sorted(p for root in args.reuse for p in root.iterdir()
                         if (p / "truth.json").is_file())
    else:
        root = args.keep or Path(tempfile.mkdtemp(prefix="qkbench-real-history-"))
        rng = np.random.default_rng(args.seed)
        folders, loads, started = [], [], time.monotonic()
        for number in range(args.series):
            folder = root / f"series-{number}"
            gap = args.commits // (len(SIZES) + 1)
            positions = [gap * (i + 1) + int(rng.integers(-1, 2)) for i in range(len(SIZES))]
            steps = dict(zip(positions, rng.permutation(SIZES).tolist()))
            folder.mkdir(parents=True)
            (folder / "truth.json").write_text(json.dumps({"steps": steps}))
            commits = make_project(folder / "project", args.commits, steps)
            cfg = folder / "history-ci.yaml"
            cfg.write_text(yaml.safe_dump(config(args.budget)))
            print(f"series {number}: steps {steps} over {args.commits} commits", flush=True)
            loads.append(os.getloadavg()[0])
            measure(folder, commits, cfg, root / "cache")
            loads.append(os.getloadavg()[0])
            folders.append(folder)
        print(f"measured in {time.monotonic() - started:.0f} s, load average "
              f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    totals: dict[str, dict] = {}
    for folder in folders:
        for name, figures in judge(folder).items():
            print(f"{folder.parent.name}/{folder.name} {name}: found at runs "
                  f"{figures['marks']}")
            total = totals.setdefault(name, {"found": 0, "right": 0,
                                             "sizes": {str(s): [0, 0] for s in SIZES}})
            total["found"] += figures["found"]
            total["right"] += figures["right"]
            for size, (hit, true) in figures["sizes"].items():
                total["sizes"][size][0] += hit
                total["sizes"][size][1] += true
    print("\n| detector, view | precision | 5% recall | 10% recall | 25% recall |")
    print("| --- | --- | --- | --- | --- |")
    for name, total in totals.items():
        precision = f"{total['right']}/{total['found']}" if total["found"] else "-"
        recalls = [f"{hit}/{true}" for hit, true in total["sizes"].values()]
        print(f"| {name} | {precision} | " + " | ".join(recalls) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
