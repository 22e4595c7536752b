"""The `qkbench` command (also `python -m qkbench`): parses arguments, calls the API, prints.

One module per command group: run_commands (run, validate, backends, env, merge, peaks),
analysis_commands (compare, history), figure_commands (plot, report), cluster_commands
(submit slurm), store_commands (store add/list, publish), find_commands (find). Nothing here measures or
computes; everything below the argument parsing is the public API or the steps under it.

Exit codes: 0 all good · 1 the work finished but something is wrong (mismatch, error, crash,
timeout, oom) · 2 the request itself is wrong (one line on stderr, never a traceback) ·
130 interrupted (what finished is kept).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any

# Importing qkbench has already quieted this process's idle thread pools, before NumPy loads.
from qkbench.cli import (analysis_commands, cluster_commands, figure_commands, find_commands,
                         run_commands, store_commands)
from qkbench.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Parser, one_line
from qkbench.cli.figure_commands import draw_run_figures as _draw_run_figures  # noqa: F401
from qkbench.errors import UsageError

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="qkbench", description="Benchmark S = Q·Kᵀ on every backend here.")
    parser.add_argument("--version", action="version",
                        version=f"qkbench {__import__('qkbench').__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in (run_commands, analysis_commands, figure_commands, cluster_commands,
                  store_commands, find_commands):
        group.add_parsers(commands)
    return parser


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler's kill) ends a run as cleanly as Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except UsageError as exc:
        print(f"qkbench: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("qkbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
