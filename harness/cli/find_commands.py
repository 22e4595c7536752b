"""The command line, finding a commit: `find GOOD BAD` (bisect to the first slower commit).

Exit codes: 0 the first slower commit found, 1 not pinned (BAD not slower, skips left several
candidates, GOOD's own cell failed), 2 a bad request, 130 interrupted (no worktree left).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from qkbench.cli.analysis_commands import parse_threshold


def add_parsers(commands: Any) -> None:
    find = commands.add_parser(
        "find", help="bisect a repository's commits to the first one that made a cell slower")
    find.add_argument("good", metavar="GOOD", help="a commit where the cell was fast")
    find.add_argument("bad", metavar="BAD", help="a later commit where it is slow")
    find.add_argument("--config", required=True, metavar="CONFIG",
                      help="the config whose sweep gives the cell (a path or a shipped name)")
    find.add_argument("--backend", required=True, metavar="NAME",
                      help="the backend whose cell is bisected (a config entry's name or "
                           "label, a built-in, a plugin, or package.module:Class)")
    find.add_argument("--repo", type=Path, default=Path("."),
                      help="the git repository: qkbench itself or a plugin package (default .)")
    find.add_argument("--cell", action="append", default=[], metavar="AXIS=VALUE",
                      help="set a sweep axis to one value until one cell is left, e.g. "
                           "--cell n=512 (repeatable)")
    find.add_argument("--threshold", default=None, metavar="T",
                      help="smallest slowdown that counts (default 0.03, compare --between's)")
    find.add_argument("--out", type=Path, metavar="DIR",
                      help="where the steps' runs and find.json go (default: "
                           "OUTPUT_DIR/find-STAMP-BAD)")
    find.add_argument("--cache", type=Path, metavar="DIR",
                      help="where each commit's environment is kept (default "
                           "~/.cache/qkbench/find)")
    find.set_defaults(handler=cmd_find)


def cmd_find(args: argparse.Namespace) -> int:
    from qkbench.api import find
    from qkbench.bisect.find import FindFailed, parse_cells

    threshold = None if args.threshold is None else parse_threshold(args.threshold)
    try:
        result = find(args.good, args.bad, config=args.config, backend=args.backend,
                      repo=args.repo,
                      cells=parse_cells(args.cell), threshold=threshold, out=args.out,
                      cache=args.cache, echo=lambda line: print(line, flush=True))
    except FindFailed as exc:
        print(f"qkbench: find: {exc}", file=sys.stderr)
        return 1
    return result.exit_code
