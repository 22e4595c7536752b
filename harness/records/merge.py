"""Step 6c: join the shards of one sweep (`qkbench run --shard I/N`) into one run directory.

Shards may come from many machines (a Slurm job array, a Kubernetes indexed Job, a CI matrix).
Merging refuses shards of different configs or shard counts and shards that share a cell, and
says which cells of the sweep no shard holds. Each shard's environment is kept in meta.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qkbench.errors import UsageError
from qkbench.records.meta import SCHEMA_VERSION
from qkbench.records.record import CellKey
from qkbench.records.results import RunWriter, key_of, read_jsonl


def _meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"{folder} is not a qkbench run directory (no readable meta.json)") \
            from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise UsageError(f"{folder}/meta.json does not describe a run")
    return meta


def expected_keys(meta: dict[str, Any]) -> set[CellKey]:
    """Every cell key of the whole (unsharded) sweep a run's meta.json describes."""
    from qkbench.plan import config as config_module
    from qkbench.plan.sweep import expand

    config = config_module.parse(config_module.parse_yaml_text(meta["config_text"], "meta.json"))
    labels = [backend["label"] for backend in meta.get("backends", [])]
    return {key_of(cell.key()) for cell in expand(config, labels)}


def merge(folders: list[Path], out: Path) -> tuple[dict[str, Any], int, list[str]]:
    """Write the merged run directory at `out`; return (its meta, cells in the merged table,
    the cells of the sweep that no shard holds, described)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"merge output {out} already exists and is not empty")
    metas = [_meta(folder) for folder in folders]
    first = metas[0]
    for folder, meta in zip(folders[1:], metas[1:]):
        if meta["config"] != first["config"]:
            raise UsageError(f"{folder} ran another config than {folders[0]}; only shards of "
                             "one sweep can be merged")
        if (meta.get("shard") or {}).get("count") != (first.get("shard") or {}).get("count"):
            raise UsageError(f"{folder} was split into a different number of shards than "
                             f"{folders[0]}")
    rows, samples, owner = [], [], {}
    for folder in folders:
        for row in read_jsonl(folder / "cells.jsonl"):
            key = key_of(row)
            if key in owner:
                raise UsageError(f"{folder} and {owner[key]} both hold the cell "
                                 f"{key.label()}; shards must not overlap")
            owner[key] = folder
            rows.append(row)
        samples.extend(s for s in read_jsonl(folder / "samples.jsonl") if key_of(s) in owner)
    writer = RunWriter(out)
    for row in rows:
        writer.append(row, [])
    writer.append_samples(samples)
    writer.finish()
    states = {meta.get("state") for meta in metas}
    merged = {**{k: v for k, v in first.items() if k not in ("shard", "wall_s", "time_split_s",
                                                            "cells_by_status")},
              "state": "finished" if states == {"finished"} else "incomplete",
              # the tables were just written in the current layout, whatever the shards had
              "schema_version": SCHEMA_VERSION,
              "merged_from": [{"folder": str(folder), "shard": meta.get("shard"),
                               "state": meta.get("state"),
                               "hardware_key": meta.get("environment", {}).get("hardware_key"),
                               "environment": meta.get("environment")}
                              for folder, meta in zip(folders, metas)]}
    missing = sorted(expected_keys(first) - set(owner))
    merged["missing_cells"] = len(missing)
    writer.write_meta(merged)
    return merged, len(rows), [key.label() for key in missing]
