"""The command line, judging runs: compare (a verdict per cell) and history (steps over time).

Exit codes of compare: 0 no cell slower, 1 some cell slower, 2 a bad request.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qkbench.cli.common import add_step_options
from qkbench.errors import UsageError


def add_parsers(commands: Any) -> None:
    compare = commands.add_parser(
        "compare", help="compare two run directories: slower, faster or same, per cell")
    compare.add_argument("baseline", type=Path,
                         help="a run directory, or a folder of runs of one config (pooled); "
                              "with --between, the run of both environments")
    compare.add_argument("candidate", type=Path, nargs="?",
                         help="the same, for the code under test (not with --between)")
    compare.add_argument("--between", nargs=2, metavar=("BASE", "CANDIDATE"),
                         help="compare two environments of one run, round by round")
    compare.add_argument("--threshold", default=None, metavar="T",
                         help="smallest change that counts: 0.1 or 10%% (default 0.1; "
                              "with --between, 0.03)")
    compare.add_argument("--threshold-for", action="append", default=[], metavar="BACKEND=T",
                         help="another threshold for one backend (repeatable)")
    compare.add_argument("--normalize-by", metavar="BACKEND",
                         help="divide each sample by BACKEND's time in the same interleaving "
                              "round before comparing (cancels machine drift)")
    compare.add_argument("--allow-different-machines", action="store_true",
                         help="compare runs whose hardware or library versions differ")
    compare.add_argument("--markdown", type=Path, metavar="FILE", help="also write Markdown")
    compare.add_argument("--json", type=Path, metavar="FILE", help="also write JSON")

    compare.set_defaults(handler=cmd_compare)

    history = commands.add_parser(
        "history", help="runs of one config over time: a table, trend plots, lasting changes")
    history.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                         help="run directories, or folders holding them (e.g. results/)")
    history.add_argument("--out", type=Path, default=Path("history"),
                         help="where history.csv and the plots go (default: ./history)")
    history.add_argument("--config", metavar="NAME", help="only the runs of this config")
    history.add_argument("--normalize-by", metavar="BACKEND",
                         help="track each median relative to BACKEND's in the same run")
    add_step_options(history)
    history.add_argument("--no-plots", action="store_true", help="write no trend plots")
    history.set_defaults(handler=cmd_history)


def parse_threshold(text: str, flag: str = "--threshold") -> float:
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"{flag}: {text!r} is not a number (give e.g. 0.1 or 10%)") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{flag}: {text!r} must be a fraction ≥ 0 (e.g. 0.1 for 10%)")
    return value


def parse_per_backend(items: Sequence[str]) -> dict[str, float]:
    found = {}
    for item in items:
        backend, sep, value = item.rpartition("=")
        if not sep or not backend:
            raise UsageError(f"--threshold-for: {item!r} must look like BACKEND=0.2")
        found[backend] = parse_threshold(value, f"--threshold-for {backend}")
    return found


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def cmd_compare(args: argparse.Namespace) -> int:
    """`qkbench compare`: 0 no cell slower, 1 some cell slower, 2 (UsageError) bad input."""
    from qkbench.analysis.compare import compare_runs
    from qkbench.analysis.verdicts import DEFAULT_THRESHOLD, Rule, to_json, to_markdown, to_text
    from qkbench.analysis.paired import PAIRED_THRESHOLD, compare_between

    if args.between is not None:
        if args.candidate is not None:
            raise UsageError("--between compares two environments of one run: give one run "
                             f"directory, not {args.baseline} and {args.candidate}")
        if args.normalize_by is not None:
            raise UsageError("--normalize-by does not apply to --between: pairing rounds "
                             "cancels the machine's drift already")
    elif args.candidate is None:
        raise UsageError("the candidate is required (compare BASELINE CANDIDATE, "
                         "or RUN --between BASE CANDIDATE)")
    default = PAIRED_THRESHOLD if args.between is not None else DEFAULT_THRESHOLD
    rule = Rule(threshold=default if args.threshold is None else parse_threshold(args.threshold),
                per_backend=parse_per_backend(args.threshold_for))
    if args.between is not None:
        comparison = compare_between(args.baseline, *args.between, rule)
    else:
        comparison = compare_runs(args.baseline, args.candidate, rule, args.normalize_by,
                                  args.allow_different_machines)
    if args.markdown is not None:
        _write(args.markdown, to_markdown(comparison))
    if args.json is not None:
        _write(args.json, json.dumps(to_json(comparison), indent=2, allow_nan=False) + "\n")
    print(to_text(comparison))
    if comparison.exit_code:
        print(f"regression: {comparison.counts()['slower']} cell(s) slower", file=sys.stderr)
    return comparison.exit_code


def cmd_history(args: argparse.Namespace) -> int:
    """`qkbench history`: 0 always once the runs are read (a step is news, not a failure)."""
    from qkbench.analysis.history import detect, gather, mark_steps, to_text
    from qkbench.records.run import find_runs
    from qkbench.present.history_plots import write_plots

    threshold = parse_threshold(args.threshold)
    if args.min_runs < 1:
        raise UsageError("--min-runs must be at least 1")
    table = gather(find_runs(args.runs), args.normalize_by, args.config)
    if args.normalize_by is not None and args.normalize_by not in set(table["backend"]):
        raise UsageError(f"--normalize-by {args.normalize_by}: no run has that backend")
    steps = detect(table, threshold, args.min_runs, args.detector)
    table = mark_steps(table, steps)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        csv = args.out / "history.csv"
        table.drop(columns=["_cell"]).rename(columns={"_path": "path"}).to_csv(csv, index=False)
    except OSError as exc:
        raise UsageError(f"cannot write to {args.out}: {exc.strerror}") from None
    print(to_text(table, steps, args.normalize_by))
    print(f"\nhistory table: {csv}")
    if not args.no_plots:
        plots = write_plots(table, steps, args.out, args.normalize_by)
        if plots is None:
            print("no plots: matplotlib is not installed")
        else:
            print(f"{len(plots)} trend plot(s) in {args.out}")
    return 0

