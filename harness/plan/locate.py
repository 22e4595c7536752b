"""Before loading: turn what the user typed (a path or a config name) into a file.

A name is looked up first in ./configs/ (a project's own sweeps, kept beside its code), then
among the configs shipped inside the qkbench package, so `qkbench run quick` works from any
folder after a plain `pip install qkbench`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from qkbench.errors import UsageError

DEFAULT_CONFIG = "default"


def packaged_configs() -> dict[str, Path]:
    """The ready sweeps shipped in the wheel, by name."""
    folder = resources.files("qkbench.configs")
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir()
            if entry.name.endswith(".yaml")}


def find_config(name: str) -> Path:
    """A path as given, else configs/NAME.yaml here, else the packaged config NAME."""
    given = Path(name)
    # os.path's tests, not Path's: they answer False instead of raising (a name too long).
    if os.path.exists(given) or given.suffix in (".yaml", ".yml") or "/" in name:
        return given
    local = Path("configs") / f"{name}.yaml"
    if os.path.isfile(local):
        return local
    shipped = packaged_configs()
    if name in shipped:
        return shipped[name]
    raise UsageError(f"no config named {name!r} (not a file, no configs/{name}.yaml here, and "
                     f"not one of the shipped configs: {', '.join(sorted(shipped))})")
