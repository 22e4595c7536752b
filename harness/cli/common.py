"""The command line's shared pieces: the parser that fails in one line, the exit codes."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from qkbench.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        raise UsageError(message)


def one_line(message: str) -> str:
    """Escape newlines and other control characters: a message quotes what the user wrote (a
    key, a file name), and that may hold a line break; the report must stay one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in message)


def add_step_options(parser: Any) -> None:
    """The options of lasting-step detection, shared by `history` and `publish`."""
    parser.add_argument("--threshold", default="0.05", metavar="T",
                        help="smallest lasting change reported (default 0.05)")
    parser.add_argument("--detector", choices=("l1", "segmentation"), default="l1",
                        help="how steps are found (default l1; docs/history.md)")
    parser.add_argument("--min-runs", type=int, default=3, metavar="K",
                        help="runs needed on each side of a step (default 3)")
