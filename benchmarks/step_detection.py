"""Which step detector finds the real steps of a history, and stays quiet on an unchanged one?

Synthetic series with known steps, at the run-to-run noise this machine has: the median of a
cell normalised by numpy moves 2-4% between runs (max/min over 3-4 runs; docs/measurement-
evidence.md, "Ratios are steadier than times"), that is a log standard deviation of about 2%,
and in a bad spell a run moves 9-12%: here 10% of the runs have four times the scatter (and a
four times wider interval, which the weighted detector may use). Each series has 60 runs and
0, 1 or 2 steps of ±S (at least 8 runs apart, 5 from either end). A found step counts when it
is within 2 runs of a true one and in its direction; precision = right / found, recall =
right / true. A/A: series without a step; the figure is the share with no step found.

Detectors: `segmentation` (qkbench's binary segmentation on medians, analysis/history.py) and
`l1` (the penalised weighted L1 fit, analysis/l1_steps.py), each at a 5% threshold (the
smallest change reported) and at history's former 10%; `l1` also weighted by 1/interval.

    python benchmarks/step_detection.py                   # 300 series per size, 600 A/A
    python benchmarks/step_detection.py --series 100 --sigma 0.03
    python benchmarks/step_detection.py --runs 200 --series 50 --aa 200

Targets (issue 27): 10% steps P and R ≥ 0.9, 25% ≥ 0.95, ≥ 95% of A/A series without a step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np
from qkbench.analysis.history import find_steps
from qkbench.analysis.l1_steps import find_steps_l1

MIN_GAP, EDGE, TOLERANCE = 8, 5, 2
RUNS = 60  # per series (--runs)


def series(rng: np.random.Generator, size: float, sigma: float, spell: float,
           steps: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """(values, per-run interval half-widths, [(index, direction)])."""
    while True:
        at = sorted(rng.choice(np.arange(EDGE, RUNS - EDGE + 1), size=steps, replace=False))
        if all(b - a >= MIN_GAP for a, b in zip(at, at[1:])):
            break
    level, truth = np.zeros(RUNS), []
    for index in at:
        direction = int(rng.choice([-1, 1]))
        level[index:] += direction * np.log1p(size)
        truth.append((int(index), direction))
    scale = np.where(rng.random(RUNS) < spell, 4.0 * sigma, sigma)
    return np.exp(level + rng.normal(0.0, scale)), scale, truth


def score(found: list[tuple[int, int]], truth: list[tuple[int, int]]) -> int:
    right, left = 0, list(truth)
    for index, direction in found:
        match = [t for t in left if abs(t[0] - index) <= TOLERANCE and t[1] == direction]
        if match:
            left.remove(match[0])
            right += 1
    return right


def detectors() -> dict[str, Callable[[np.ndarray, np.ndarray], list[tuple[int, int]]]]:
    def segmentation(threshold: float):
        return lambda v, w: [(s.index, 1 if s.change > 0 else -1)
                             for s in find_steps(v, threshold, 3)]

    def l1(threshold: float, weighted: bool):
        return lambda v, w: [(i, 1 if after > before else -1) for i, before, after in
                             find_steps_l1(v, threshold, 3, 1.0 / w if weighted else None)]

    return {"segmentation 10%": segmentation(0.10), "segmentation 5%": segmentation(0.05),
            "l1 10%": l1(0.10, False), "l1 5%": l1(0.05, False),
            "l1 5% weighted": l1(0.05, True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=300, help="series per step size")
    parser.add_argument("--aa", type=int, default=600, help="A/A series")
    parser.add_argument("--sigma", type=float, default=0.02, help="run-to-run log sd")
    parser.add_argument("--spell", type=float, default=0.10,
                        help="share of runs with 4x the scatter")
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--runs", type=int, default=RUNS, help="runs per series (≥ 30)")
    args = parser.parse_args()
    globals()["RUNS"] = args.runs
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    cases = {size: [series(rng, size, args.sigma, args.spell, int(rng.integers(1, 3)))
                    for _ in range(args.series)] for size in (0.05, 0.10, 0.25)}
    quiet = [series(rng, 0.0, args.sigma, args.spell, 0) for _ in range(args.aa)]
    print(f"{RUNS} runs per series, noise sd {args.sigma:.1%} ({args.spell:.0%} of runs 4x), "
          f"{args.series} series per size, {args.aa} A/A; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    header = f"{'detector':18}" + "".join(f"  {f'{s:.0%} P':>6} {f'{s:.0%} R':>6}"
                                          for s in cases) + "  A/A quiet  ms/series"
    print(header)
    for name, detect in detectors().items():
        cells, timed, count = [], time.perf_counter(), 0
        for cases_of_size in cases.values():
            right = found = true = 0
            for values, scale, truth in cases_of_size:
                steps = detect(values, scale)
                right += score(steps, truth)
                found += len(steps)
                true += len(truth)
                count += 1
            cells.append(f"  {right / found if found else 1.0:6.3f} {right / true:6.3f}")
        silent = sum(not detect(values, scale) for values, scale, _ in quiet) / len(quiet)
        count += len(quiet)
        per = (time.perf_counter() - timed) / count * 1e3
        print(f"{name:18}" + "".join(cells) + f"  {silent:9.3f}  {per:9.2f}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
