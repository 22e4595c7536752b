"""The run directory's meta.json — the environment, the config and how the run ended.

`SCHEMA_VERSION` counts changes to the layout of a run directory (columns, meta keys); the one
loader (`qkbench.records.run.load_run`) migrates every older version it knows on read.
A meta.json is made here and read back, typed, as `qkbench.records.run.RunMeta`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qkbench.machine.environment import fingerprint

#: 1: wave-1 run directories (no schema_version key). 2: the typed record, `info` column.
SCHEMA_VERSION = 2


def new_meta(config: Any, specs: Sequence[Any], config_file: str, config_text: str,
             shard: Any, command: Sequence[str]) -> dict[str, Any]:
    """meta.json of a run about to start (state "running" until the writer finishes it)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "config_file": config_file,
        "config": config.model_dump(mode="json", warnings=False),
        "config_text": config_text,
        "backends": [{"label": s.label, "path": s.path, "origin": s.origin,
                      "options": dict(s.options)} for s in specs],
        "shard": {"index": shard.index, "count": shard.count},
        "command": list(command),
        "environment": fingerprint(),
        "state": "running",
    }
