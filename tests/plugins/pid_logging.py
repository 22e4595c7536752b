"""A real NumPy backend that notes which process set each cell up, so a test can count the
worker processes a cell's samples were spread over (and when each process ran `load`)."""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from qkbench.backends.base import Backend


class PidLogging(Backend):
    name = "pid-logging"
    dtypes = ("float32",)

    def __init__(self, log: str) -> None:
        self._log = Path(log)

    def load(self):
        with self._log.with_suffix(".load").open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        # Workers end without the interpreter's teardown (docs/plugins.md): this never runs.
        atexit.register(self._log.with_suffix(".atexit").write_text, f"{os.getpid()}\n")

    def prepare(self, q, k):
        with self._log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        return super().prepare(q, k)

    def scores(self, q, k):
        return q @ k.T
