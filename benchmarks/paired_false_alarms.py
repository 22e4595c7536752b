"""Does `qkbench compare RUN --between BASE CANDIDATE` cry wolf, and what slowdowns does it catch?

The sibling of aa_false_alarms.py for paired runs. Each run is one `qkbench run` of the CI sweep
(configs/ci.yaml, optionally cut down) plus the test backend "subject"
(tests.plugins.slowed:Subject) in two environments, `base` and `cand`: the same interpreter and
code, differing only in QKBENCH_SUBJECT_SLOWDOWN, the share of its own call that the subject
then spends busy in `cand`:

* A/A runs (no slowdown in either): any `slower` of any cell is a false alarm (it would fail
  CI), any `faster` a false claim;
* slowdown runs (5%, 10%, 25% in `cand`): the subject's cells should be `slower`; the other
  backends' cells are unchanged code, so they count as A/A cells too.

Kinds of run alternate (A/A, 5%, 10%, 25%, A/A, …) so the machine's drift falls on all of them
alike. Every run's verdicts are read at several thresholds (the interval does not depend on it),
so the paired default can be chosen from the A/A runs. The script also times the five-a-side
recipe's ten runs of the same sweep (one environment each) in the same sitting, and, from the
A/A runs, the ratio in rounds where the base sampled first against those where the candidate
did: an environment that warmed the caches or the clock for the other would show there.

    python benchmarks/paired_false_alarms.py --aa 20 --per-slowdown 8 --sizes 256 512 \\
        --budget 0.25 --keep results/paired
    python benchmarks/paired_false_alarms.py --reuse results/paired      # analyse again

Run it under `flock` on an otherwise idle machine; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent

from qkbench.analysis import compare  # noqa: E402
from qkbench.analysis.verdicts import Rule  # noqa: E402
from qkbench.analysis.paired import PAIRED_THRESHOLD, compare_between  # noqa: E402

compare.read_run = functools.lru_cache(maxsize=None)(compare.read_run)

SUBJECT = "subject"
SLOWDOWNS = (0.05, 0.10, 0.25)
THRESHOLDS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10)
VARIABLE = "QKBENCH_SUBJECT_SLOWDOWN"


def base_config(sizes: list[int] | None, budget: float | None) -> dict:
    config = yaml.safe_load((REPO / "configs" / "ci.yaml").read_text())
    if sizes:
        config["sweep"]["n"] = sizes
    if budget:
        config["timing"]["budget_s"] = budget
    config["backends"] = config["backends"] + [{"name": "tests.plugins.slowed:Subject",
                                                "label": SUBJECT}]
    return config


def write_configs(folder: Path, base: dict) -> dict[str, Path]:
    """One config per kind of paired run, and the single-environment one of the recipe."""
    paths = {}
    for slowdown in (0.0, *SLOWDOWNS):
        name = "aa" if slowdown == 0 else f"slow{round(100 * slowdown):02d}"
        environments = [{"name": "base", "python": sys.executable},
                        {"name": "cand", "python": sys.executable,
                         "env": {VARIABLE: str(slowdown)}}]
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump({**base, "name": f"paired-{name}",
                                               "environments": environments}, sort_keys=False))
    paths["single"] = folder / "single.yaml"
    paths["single"].write_text(yaml.safe_dump({**base, "name": "single"}, sort_keys=False))
    return paths


def run_one(config: Path, out: Path) -> float | None:
    """One `qkbench run`; its wall time, or None when it failed (left out, and said)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                   "")]))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "qkbench", "run", str(config), "--out",
                             str(out), "--quiet", "--no-plots"], cwd=REPO, env=env,
                            capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    if result.returncode != 0 or not (out / "summary.parquet").is_file():
        print(f"run {out} failed (exit {result.returncode}), left out: "
              f"{result.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return took


def schedule(aa: int, per_slowdown: int) -> list[str]:
    """A/A and slowdown runs alternated, so drift falls on every kind alike."""
    queues = {"aa": aa, **{f"slow{round(100 * s):02d}": per_slowdown for s in SLOWDOWNS}}
    order = []
    while any(queues.values()):
        for kind in queues:
            if queues[kind]:
                order.append(kind)
                queues[kind] -= 1
    return order


def measure(folder: Path, configs: dict[str, Path], aa: int, per_slowdown: int,
            recipe_runs: int) -> dict[str, list[float]]:
    walls: dict[str, list[float]] = {"paired": [], "single": []}
    started = time.monotonic()
    order = schedule(aa, per_slowdown)
    counts: dict[str, int] = {}
    for i, kind in enumerate(order):
        counts[kind] = counts.get(kind, 0) + 1
        took = run_one(configs[kind], folder / f"{kind}-{counts[kind]:02d}")
        if took is not None:
            walls["paired"].append(took)
        print(f"[{time.monotonic() - started:6.0f} s] {i + 1}/{len(order)} {kind}",
              file=sys.stderr, flush=True)
        if i == len(order) // 2:  # the recipe's runs in the middle of the sitting
            for j in range(recipe_runs):
                took = run_one(configs["single"], folder / f"single-{j:02d}")
                if took is not None:
                    walls["single"].append(took)
    return walls


def order_effect(run: Path) -> list[tuple[str, float]]:
    """(which environment sampled first in the round, cand/base ratio of that round) for every
    round of every cell of an A/A run."""
    samples = pd.read_parquet(run / "samples.parquet")
    out = []
    for _, cell in samples.groupby(["backend", "n"]):
        per = cell.groupby(["round", "environment"]).agg(first=("t_start", "min"),
                                                           seconds=("seconds", "median"))
        per = per.unstack("environment").dropna()
        for _, row in per.iterrows():
            first = "base" if row[("first", "base")] < row[("first", "cand")] else "cand"
            out.append((first, row[("seconds", "cand")] / row[("seconds", "base")]))
    return out


def analyse(folder: Path) -> None:
    runs = {kind: sorted(p for p in folder.glob(f"{kind}-*") if (p / "summary.parquet").is_file())
            for kind in ("aa", *[f"slow{round(100 * s):02d}" for s in SLOWDOWNS])}
    wide = Rule(threshold=0.0)
    verdicts: dict[str, list[list[tuple[str, float, float]]]] = {}
    for kind, paths in runs.items():
        verdicts[kind] = []
        for path in paths:
            cells = compare_between(path, "base", "cand", wide).cells
            verdicts[kind].append([(c.key["backend"], c.ci_low, c.ci_high, c.ratio, c.verdict)
                                   for c in cells])
    print(f"\n{len(runs['aa'])} A/A runs, "
          + ", ".join(f"{len(runs[f'slow{round(100 * s):02d}'])} at {100 * s:g}%"
                      for s in SLOWDOWNS) + f"; paired default threshold {PAIRED_THRESHOLD:g}")
    print("columns: A/A runs with any cell slower; unchanged cells (every A/A cell, and the "
          "other backends' cells of slowdown runs) slower or faster; the subject's cells caught "
          "(slower) per slowdown; runs in which any subject cell was caught")
    header = (f"{'threshold':>10}{'A/A runs alarmed':>20}{'A/A cells slower':>20}"
              f"{'A/A cells faster':>20}" + "".join(f"{f'{100 * s:g}% caught':>14}"
                                                       for s in SLOWDOWNS)
              + "".join(f"{f'{100 * s:g}% runs':>14}" for s in SLOWDOWNS))
    print(header)
    print("-" * len(header))
    for t in THRESHOLDS:
        decide = functools.partial(Rule(threshold=t).decide, threshold=t)
        unchanged = [[(b, lo, hi) for b, lo, hi, _, v in cells
                      if v != "not comparable" and (kind == "aa" or b != SUBJECT)]
                     for kind in verdicts for cells in verdicts[kind]]
        aa_runs = [[(b, lo, hi) for b, lo, hi, _, v in cells if v != "not comparable"]
                   for cells in verdicts["aa"]]
        alarmed = sum(any(decide(lo, hi) == "slower" for _, lo, hi in cells) for cells in aa_runs)
        flat = [decide(lo, hi) for cells in unchanged for _, lo, hi in cells]
        line = (f"{100 * t:>9g}%{_frac(alarmed, len(aa_runs)):>20}"
                f"{_frac(flat.count('slower'), len(flat)):>20}"
                f"{_frac(flat.count('faster'), len(flat)):>20}")
        for s in SLOWDOWNS:
            caught = [decide(lo, hi) == "slower" for cells in verdicts[f"slow{round(100 * s):02d}"]
                      for b, lo, hi, _, v in cells if b == SUBJECT and v != "not comparable"]
            line += f"{_frac(sum(caught), len(caught)):>14}"
        for s in SLOWDOWNS:
            # A run catches the slowdown when any of the subject's cells is slower: its CI job
            # fails, which is what a user relies on.
            caught = [any(decide(lo, hi) == "slower" for b, lo, hi, _, v in cells
                          if b == SUBJECT and v != "not comparable")
                      for cells in verdicts[f"slow{round(100 * s):02d}"]]
            line += f"{_frac(sum(caught), len(caught)):>14}"
        print(line)
    alarms: dict[str, list[float]] = {}
    for kind in verdicts:
        for cells in verdicts[kind]:
            for b, lo, _, _, v in cells:
                if v != "not comparable" and (kind == "aa" or b != SUBJECT):
                    alarms.setdefault(b, []).append(lo)
    print("\nunchanged cells, highest interval low end per backend (a threshold below it cries "
          "wolf): " + ", ".join(f"{b} {max(lows):.3f} ({len(lows)} cells)"
                                for b, lows in sorted(alarms.items())))
    not_comparable = sum(v == "not comparable" for cells_list in verdicts.values()
                         for cells in cells_list for *_, v in cells)
    total = sum(len(cells) for cells_list in verdicts.values() for cells in cells_list)
    print(f"not comparable: {not_comparable} of {total} cells (too few rounds in common)")
    aa_ratios = [abs(math.log(r)) for cells in verdicts["aa"] for _, _, _, r, v in cells
                 if v != "not comparable"]
    lows = [lo for cells in verdicts["aa"] for _, lo, _, _, v in cells if v != "not comparable"]
    if aa_ratios:
        print(f"\nA/A cells: largest |ratio - 1| {math.expm1(max(aa_ratios)):.3f}, highest "
              f"interval low end {max(lows):.3f} (a threshold below it cries wolf)")
    for s in SLOWDOWNS:
        ratios = [r for cells in verdicts[f"slow{round(100 * s):02d}"]
                  for b, _, _, r, v in cells if b == SUBJECT and v != "not comparable"]
        if ratios:
            print(f"subject at {100 * s:g}%: median paired ratio {np.median(ratios):.3f} "
                  f"(range {min(ratios):.3f}-{max(ratios):.3f})")
    effect = [pair for path in runs["aa"] for pair in order_effect(path)]
    for first in ("base", "cand"):
        ratios = [r for f, r in effect if f == first]
        if ratios:
            print(f"A/A rounds in which {first} sampled first: {len(ratios)}, median cand/base "
                  f"{np.median(ratios):.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa", type=int, default=20, help="A/A paired runs (default 20)")
    parser.add_argument("--per-slowdown", type=int, default=8,
                        help="paired runs per slowdown (default 8)")
    parser.add_argument("--recipe-runs", type=int, default=10,
                        help="single-environment runs timed for the five-a-side recipe (10)")
    parser.add_argument("--sizes", type=int, nargs="+", help="n = m sizes (default: ci.yaml's)")
    parser.add_argument("--budget", type=float, help="timing.budget_s (default: ci.yaml's)")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--reuse", type=Path, help="analyse the runs already in this folder")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.monotonic()
    if args.reuse:
        folder = args.reuse
    else:
        folder = args.keep or Path(tempfile.mkdtemp(prefix="qkbench-paired-"))
        folder.mkdir(parents=True, exist_ok=True)
        configs = write_configs(folder, base_config(args.sizes, args.budget))
        walls = measure(folder, configs, args.aa, args.per_slowdown, args.recipe_runs)
        paired, single = walls["paired"], walls["single"]
        if paired and single:
            recipe = 10 * float(np.mean(single))
            print(f"\nwall time: one paired run {np.median(paired):.1f} s (median of "
                  f"{len(paired)}); one single-environment run {np.median(single):.1f} s, so "
                  f"the five-a-side recipe's ten {recipe:.0f} s; paired / recipe "
                  f"{np.median(paired) / recipe:.2f}")
    analyse(folder)
    print(f"\nload average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"({os.cpu_count()} cores); total {time.monotonic() - started:.0f} s")
    if args.keep or args.reuse:
        print(f"run directories: {folder}")
    return 0


def _frac(part: int, whole: int) -> str:
    return f"{part}/{whole} {100 * part / whole:4.1f}%" if whole else "-"


if __name__ == "__main__":
    sys.exit(main())
