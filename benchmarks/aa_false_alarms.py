"""Does `qkbench compare` cry wolf, and does it catch a real 25% slowdown? Measured, not assumed.

The script runs the CI sweep (configs/ci.yaml, optionally cut down) K times with an extra
backend labelled "subject", alternating two versions of it:

  plain:  tests.plugins.slowed:PlainNumpy   (S = Q·Kᵀ through NumPy)
  slowed: tests.plugins.slowed:SlowedNumpy  (the same, plus an extra quarter of the product)

and then compares pairs of distinct runs with compare's default settings:

* A/A pairs (plain vs plain, slowed vs slowed; every cell, every backend): any "slower" is a
  false alarm (the exit code would fail CI), any "faster" a false claim;
* A/B pairs (plain baseline, slowed candidate): the subject's cells should all be "slower" —
  the detection rate of a 25%-more-work regression.

Each is done on raw times and normalised by numpy (per interleaving round), and for the rule
compare uses (the whole interval beyond 1 + t) next to a looser one (ratio beyond 1 + t and
interval above 1), so the choice between them rests on these figures.

    python benchmarks/aa_false_alarms.py                 # 8 runs of each kind, about 4 minutes
    python benchmarks/aa_false_alarms.py --runs 11 --keep results/aa

Run it on an otherwise idle machine for figures about the tool; on a busy one it measures the
machine as much as the tool (the load average is printed with the results).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent


from qkbench.analysis import compare
from qkbench.analysis.verdicts import Rule
from qkbench.analysis.compare import compare_runs

# Every run takes part in dozens of pairs: read each one once. (compare never changes a run.)
compare.read_run = functools.lru_cache(maxsize=None)(compare.read_run)

SUBJECT = "subject"
VERSIONS = {"plain": "tests.plugins.slowed:PlainNumpy",
            "slowed": "tests.plugins.slowed:SlowedNumpy"}


def write_configs(folder: Path, sizes: list[int] | None, threads: int | None,
                  budget: float | None) -> dict[str, Path]:
    base = yaml.safe_load((REPO / "configs" / "ci.yaml").read_text())
    if sizes:
        base["sweep"]["n"] = sizes
    if threads:
        base["sweep"]["threads"] = [threads]
    if budget:
        base["timing"]["budget_s"] = budget
    paths = {}
    for version, path in VERSIONS.items():
        config = {**base, "name": f"aa-{version}",
                  "backends": base["backends"] + [{"name": path, "label": SUBJECT}]}
        paths[version] = folder / f"aa-{version}.yaml"
        paths[version].write_text(yaml.safe_dump(config, sort_keys=False))
    return paths


def run_all(configs: dict[str, Path], runs: int, folder: Path) -> dict[str, list[Path]]:
    """Alternate plain and slowed runs, so slow drift of the machine falls on both alike."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                   "")]))
    done: dict[str, list[Path]] = {version: [] for version in configs}
    started = time.monotonic()
    for i in range(runs):
        for version, config in configs.items():
            out = folder / f"{version}-{i:02d}"
            result = subprocess.run([sys.executable, "-m", "qkbench", "run", str(config),
                                     "--out", str(out), "--quiet"], cwd=REPO, env=env,
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0 or not (out / "summary.parquet").is_file():
                # A failed cell is a broken harness or backend, not timing noise: leave the run
                # out rather than count its "not comparable" cells as quiet A/A pairs.
                print(f"run {out} failed (exit {result.returncode}), left out: "
                      f"{result.stderr.strip()[-300:]}", file=sys.stderr)
                continue
            done[version].append(out)
            print(f"[{time.monotonic() - started:6.0f} s] run {i + 1}/{runs} {version}",
                  file=sys.stderr, flush=True)
    return done


def loose_verdict(cell, threshold: float) -> str:
    """The alternative rule: point estimate beyond the threshold, interval excluding 1."""
    if math.isnan(cell.ratio):
        return cell.verdict
    if cell.ratio > 1 + threshold and cell.ci_low > 1:
        return "slower"
    if cell.ratio < 1 / (1 + threshold) and cell.ci_high < 1:
        return "faster"
    return "same"


def tally(pairs: list[tuple[Path, Path]], normalize_by: str | None, only: str | None = None
          ) -> dict[str, object]:
    """Verdict counts over the cells of all pairs, per rule, and pairs with any 'slower'."""
    rule = Rule()
    counts = {name: {"slower": 0, "faster": 0, "same": 0, "other": 0, "pairs_alarmed": 0}
              for name in ("compare", "loose")}
    ratios, by_backend = [], {}
    for baseline, candidate in pairs:
        cells = compare_runs(baseline, candidate, rule, normalize_by).cells
        cells = [c for c in cells if c.verdict != "reference"
                 and (only is None or c.key["backend"] == only)]
        for name, tallied in counts.items():
            verdicts = [c.verdict if name == "compare" else loose_verdict(c, c.threshold)
                        for c in cells]
            for verdict in verdicts:
                tallied[verdict if verdict in ("slower", "faster", "same") else "other"] += 1
            tallied["pairs_alarmed"] += "slower" in verdicts
        for cell in cells:
            if cell.verdict == "slower":
                by_backend[cell.key["backend"]] = by_backend.get(cell.key["backend"], 0) + 1
            if not math.isnan(cell.ratio):
                ratios.append(cell.ratio)
    return {"counts": counts, "pairs": len(pairs), "ratios": ratios, "slower_by_backend": by_backend}


def pooled_pairs(runs: dict[str, list[Path]], size: int, count: int, folder: Path
                 ) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Pairs of pools of `size` runs, the two pools of a pair never sharing a run: A/A pairs
    within each version, A/B pairs across. Seeded, so reruns pick the same pools."""
    rng = random.Random(0)
    made: dict[tuple[Path, ...], Path] = {}

    def pool(members: tuple[Path, ...]) -> Path:
        if members not in made:  # a folder of links: compare reads a folder as a pooled side
            where = folder / "pools" / f"pool{len(made):03d}"
            where.mkdir(parents=True, exist_ok=True)
            for run in members:
                (where / run.name).symlink_to(run.resolve(), target_is_directory=True)
            made[members] = where
        return made[members]

    aa, ab = [], []
    for _ in range(count):
        for version in VERSIONS:
            if len(runs[version]) >= 2 * size:
                picked = rng.sample(runs[version], 2 * size)
                aa.append((pool(tuple(sorted(picked[:size]))), pool(tuple(sorted(picked[size:])))))
        if min(len(runs[v]) for v in VERSIONS) >= size:
            ab.append((pool(tuple(sorted(rng.sample(runs["plain"], size)))),
                       pool(tuple(sorted(rng.sample(runs["slowed"], size))))))
    return aa, ab


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each version (default 9)")
    parser.add_argument("--sizes", type=int, nargs="+", help="n = m sizes (default: ci.yaml's)")
    parser.add_argument("--threads", type=int, help="threads per CPU backend (default: ci.yaml's)")
    parser.add_argument("--budget", type=float, help="timing.budget_s (default: ci.yaml's)")
    parser.add_argument("--pool", type=int, default=3,
                        help="runs per side in the pooled comparisons (default 3)")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--reuse", type=Path, help="compare the runs already in this folder")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    started = time.monotonic()
    if args.reuse:
        folder = args.reuse
        runs = {v: [r for r in sorted(folder.glob(f"{v}-*")) if _all_ok(r)] for v in VERSIONS}
    else:
        folder = args.keep or Path(tempfile.mkdtemp(prefix="qkbench-aa-"))
        folder.mkdir(parents=True, exist_ok=True)
        configs = write_configs(folder, args.sizes, args.threads, args.budget)
        runs = run_all(configs, args.runs, folder)
    run_s = time.monotonic() - started
    shutil.rmtree(folder / "pools", ignore_errors=True)

    pairings = [("1 run a side", [p for v in VERSIONS for p in itertools.combinations(runs[v], 2)],
                 list(itertools.product(runs["plain"], runs["slowed"])))]
    if args.pool > 1:
        aa, ab = pooled_pairs(runs, args.pool, 30, folder)
        if aa and ab:
            pairings.append((f"{args.pool} runs a side", aa, ab))
    print(f"\n{len(runs['plain'])} plain + {len(runs['slowed'])} slowed runs of "
          f"configs/ci.yaml + '{SUBJECT}' in {run_s:.0f} s; load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores)")
    for name, aa_pairs, ab_pairs in pairings:
        print(f"{name}: {len(aa_pairs)} A/A pairs (distinct runs; every cell), {len(ab_pairs)} "
              f"A/B pairs (plain baseline, slowed candidate; the '{SUBJECT}' cells)")
    header = (f"\n{'pairs':<15}{'mode':<12}{'rule':<9}{'A/A pairs alarmed':>19}"
              f"{'A/A cells slower':>18}{'A/A cells faster':>18}{'not comparable':>16}"
              f"{'25% caught':>16}{'subject ratio':>15}")
    print(header)
    print("-" * len(header))
    for name, aa_pairs, ab_pairs in pairings:
        for mode, normalize_by in (("raw", None), ("÷ numpy", "numpy")):
            aa = tally(aa_pairs, normalize_by)
            ab = tally(ab_pairs, normalize_by, only=SUBJECT)
            for rule in ("compare", "loose"):
                a, b = aa["counts"][rule], ab["counts"][rule]
                cells = sum(a[k] for k in ("slower", "faster", "same", "other"))
                judged = sum(b[k] for k in ("slower", "faster", "same", "other"))
                ratios = sorted(ab["ratios"])
                median_ratio = ratios[len(ratios) // 2] if ratios else math.nan
                alarmed = _frac(a["pairs_alarmed"], aa["pairs"])
                print(f"{name:<15}{mode:<12}{rule:<9}{alarmed:>19}"
                      f"{_frac(a['slower'], cells):>18}{_frac(a['faster'], cells):>18}"
                      f"{_frac(a['other'], cells):>16}{_frac(b['slower'], judged):>16}"
                      f"{median_ratio:>15.3f}")
            if aa["slower_by_backend"]:
                print(f"{'':<27}A/A 'slower' cells by backend (compare's rule): "
                      + ", ".join(f"{k} {v}" for k, v in sorted(aa["slower_by_backend"].items())))
    print(f"\nrule 'compare' (the default): slower when the 95% interval of the ratio lies above "
          f"1 + t; 'loose': ratio above 1 + t and interval above 1; t = {Rule().threshold:g}.")
    print(f"total {time.monotonic() - started:.0f} s")
    if args.keep or args.reuse:
        print(f"run directories: {folder}")
    return 0


def _all_ok(run: Path) -> bool:
    summary = pd.read_parquet(run / "summary.parquet")
    if (summary["status"] == "ok").all():
        return True
    print(f"{run} has failed cells, left out", file=sys.stderr)
    return False


def _frac(part: int, whole: int) -> str:
    return f"{part}/{whole} {100 * part / whole:4.1f}%" if whole else "-"


if __name__ == "__main__":
    sys.exit(main())
