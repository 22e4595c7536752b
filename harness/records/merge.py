"""Join the shards of one sweep (`qkbench run --shard I/N`) into one run directory.

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
from qkbench.cell_key import CELL_KEY, CellKey
from qkbench.records.results import RunWriter
from qkbench.records.run import META_FILE, RunMeta, read_meta


def _shard_meta(folder: Path) -> RunMeta:
    meta = read_meta(folder)
    if not meta.config:
        raise UsageError(f"{folder}/{META_FILE} does not describe a run")
    return meta


def expected_keys(meta: RunMeta) -> set[CellKey]:
    """Every cell key of the whole (unsharded) sweep a run's meta.json describes."""
    from qkbench.plan import config as config_module
    from qkbench.plan.sweep import expand

    config = config_module.parse(config_module.parse_yaml_text(meta.config_text or "",
                                                               META_FILE))
    return {cell.key for cell in expand(config, list(meta.backend_labels))}


def _same_machine_kind(folders: list[Path], metas: list[RunMeta]) -> None:
    """Today's comparability rule (the fingerprint's `comparability_key`: the same hardware and
    software): shards timed on different kinds of machine cannot make one table."""
    from qkbench.machine.environment import differences

    first = metas[0]
    for folder, meta in zip(folders[1:], metas[1:]):
        key_a, key_b = first.comparability_key, meta.comparability_key
        if key_a is None or key_b is None or key_a == key_b:
            continue  # a run from before the key existed cannot be checked
        changed = ("; ".join(differences(first.environment, meta.environment)[:3])
                   or f"{key_a} vs {key_b}")
        raise UsageError(f"{folder} ran on another kind of machine than {folders[0]} "
                         f"({changed}); merge only shards of one machine kind (one partition)")


def _read_log(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str],
                                     list[dict[str, Any]]]:
    """A shard's log lines and their records: (row lines, rows, sample lines, samples). The
    lines are kept to be written out as they are, without encoding them again; a torn line
    (a killed shard) is skipped."""
    out: list[list[Any]] = []
    for name in ("cells.jsonl", "samples.jsonl"):
        path = folder / name
        lines, records = [], []
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        for line in text.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
            lines.append(line)
        out += [lines, records]
    return out[0], out[1], out[2], out[3]


class _Keys:
    """Cell keys of log records, computed once per distinct key: a sweep's samples outnumber
    its cells by the samples per cell, and a `CellKey` costs a validation each."""

    def __init__(self) -> None:
        self._known: dict[tuple[Any, ...], CellKey] = {}

    def of(self, record: dict[str, Any]) -> CellKey:
        raw = tuple(str(record.get(name)) for name in CELL_KEY)
        key = self._known.get(raw)
        if key is None:
            key = self._known[raw] = CellKey.of(record)
        return key


def merge(folders: list[Path], out: Path) -> tuple[dict[str, Any], int, list[str]]:
    """Write the merged run directory at `out`; return (its meta, cells in the merged table,
    the cells of the sweep that no shard holds, described)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"merge output {out} already exists and is not empty")
    metas = [_shard_meta(folder) for folder in folders]
    first = metas[0]
    for folder, meta in zip(folders[1:], metas[1:]):
        if meta.config != first.config:
            raise UsageError(f"{folder} ran another config than {folders[0]}; only shards of "
                             "one sweep can be merged")
        if meta.shard_count != first.shard_count:
            raise UsageError(f"{folder} was split into a different number of shards than "
                             f"{folders[0]}")
    _same_machine_kind(folders, metas)
    keys = _Keys()
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    row_lines: list[str] = []
    sample_lines: list[str] = []
    owner: dict[CellKey, Path] = {}
    for folder in folders:
        shard_rows, shard_row_records, shard_samples, shard_sample_records = _read_log(folder)
        for line, row in zip(shard_rows, shard_row_records):
            key = keys.of(row)
            if key in owner:
                raise UsageError(f"{folder} and {owner[key]} both hold the cell "
                                 f"{key.label()}; shards must not overlap")
            owner[key] = folder
            rows.append(row)
            row_lines.append(line)
        # The samples of a cell whose row never made it (a shard killed in between) are left
        # out, as the shard's own resume would drop them.
        for line, sample in zip(shard_samples, shard_sample_records):
            if owner.get(keys.of(sample)) is folder:
                samples.append(sample)
                sample_lines.append(line)
    writer = RunWriter(out)
    writer.append_log(row_lines, sample_lines)
    writer.finish((rows, samples))
    states = {meta.state for meta in metas}
    per_shard = ("shard", "wall_s", "time_split_s", "cells_by_status")
    merged = {**{k: v for k, v in first.raw.items() if k not in per_shard},
              "state": "finished" if states == {"finished"} else "incomplete",
              # the tables were just written in the current layout, whatever the shards had
              "schema_version": SCHEMA_VERSION,
              "merged_from": [{"folder": str(folder),
                               "shard": {"index": meta.shard_index, "count": meta.shard_count},
                               "state": meta.state, "hardware_key": meta.hardware_key,
                               "environment": meta.environment}
                              for folder, meta in zip(folders, metas)]}
    missing = sorted(expected_keys(first) - set(owner))
    merged["missing_cells"] = len(missing)
    count = first.shard_count or 1
    given = {meta.shard_index for meta in metas}
    merged["missing_shards"] = [index for index in range(1, count + 1) if index not in given]
    writer.write_meta(merged)
    return merged, len(rows), [key.label() for key in missing]
