"""qkbench: a benchmarking harness for the attention-score kernel S = Q·Kᵀ.

The public API (documented in docs/api.md)::

    import qkbench
    run = qkbench.run("quick")                  # a config name, a path, a mapping or a Config
    run.summary                                 # one row per cell (pandas DataFrame)
    base = qkbench.load_run("results/…")        # any run directory, older schema versions too
    verdicts = qkbench.compare(base, run)       # .table, .regressions, .to_markdown()

    from qkbench import Backend                 # the base class a plugin backend extends

Names resolve on first use, so `import qkbench` stays cheap (the command line refuses a bad
request before pandas or a backend library is imported).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qkbench.machine.idle_threads import quiet_idle_threads
from qkbench.version import __version__

# Before anything imports NumPy: reference products run with BLAS in this process too, and its
# thread pool must not spin through the next backend's turn (see qkbench.machine.idle_threads).
quiet_idle_threads()

__all__ = [
    "Backend",
    "Comparison",
    "Config",
    "Run",
    "UsageError",
    "__version__",
    "compare",
    "find",
    "load_config",
    "load_run",
    "resume",
    "resume_slurm",
    "run",
    "submit_slurm",
]

_WHERE = {
    "Backend": "qkbench.backends.base", "Comparison": "qkbench.analysis.verdicts",
    "Config": "qkbench.plan.config", "Run": "qkbench.records.run", "UsageError": "qkbench.errors",
    "compare": "qkbench.api", "find": "qkbench.api", "load_config": "qkbench.api",
    "load_run": "qkbench.api",
    "resume": "qkbench.api", "run": "qkbench.api", "submit_slurm": "qkbench.api",
    "resume_slurm": "qkbench.api",
}

if TYPE_CHECKING:
    from qkbench.analysis.verdicts import Comparison
    from qkbench.api import (compare, find, load_config, load_run, resume, resume_slurm, run,
                             submit_slurm)
    from qkbench.backends.base import Backend
    from qkbench.errors import UsageError
    from qkbench.plan.config import Config
    from qkbench.records.run import Run


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'qkbench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
