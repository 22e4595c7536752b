"""What `qkbench find` measures: the config cut down to one backend and one cell.

A decision is one paired run of that cell (the tested commit's environment against GOOD's),
so the config's sweep is narrowed by `--cell AXIS=VALUE` (each sets one axis of `sweep` to
that one value) until one cell of the backend is left; the config's own `environments` give
way to find's two.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from qkbench.errors import UsageError
from qkbench.plan import config as config_module
from qkbench.plan.locate import find_config
from qkbench.plan.sweep import expand

AXES = tuple(config_module.Sweep.model_fields)


def parse_cells(items: Sequence[str]) -> dict[str, Any]:
    """`--cell n=512`, `--cell dtype=float64`: {axis: value}, values read as YAML scalars."""
    found: dict[str, Any] = {}
    for item in items:
        axis, sep, text = item.partition("=")
        axis = axis.strip()
        if not sep or not axis or not text.strip():
            raise UsageError(f"--cell: {item!r} must look like AXIS=VALUE (e.g. n=512)")
        if axis not in AXES:
            raise UsageError(f"--cell: {axis!r} is not an axis of the sweep (axes: "
                             f"{', '.join(AXES)})")
        try:
            found[axis] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UsageError(f"--cell: {item!r}: cannot read {text!r} as a value") from None
    return found


def narrowed(source: str | Path, backend: str, cells: dict[str, Any]
             ) -> tuple[dict[str, Any], config_module.Config]:
    """The config's data with one backend and `cells` applied, and it validated; UsageError
    unless exactly one cell of the backend is left."""
    path = find_config(str(source))
    data = config_module.read_yaml(path)
    config_module.parse(data, str(path))  # the config's own errors first, as `run` gives them
    data = copy.deepcopy(data)
    entries = list(data.get("backends") or [])
    chosen = [entry for entry in entries if backend in _names(entry)]
    data["backends"] = [chosen[0] if chosen else backend]
    sweep = dict(data.get("sweep") or {})
    for axis, value in cells.items():
        sweep[axis] = value if axis == "tokens" else [value]
    data["sweep"] = sweep
    data.pop("environments", None)
    config = config_module.parse(data, f"{path} with --cell")
    found = expand(config, [backend])
    if len(found) != 1:
        keys = [cell.key.as_dict() for cell in found]
        derived = {"backend", "environment", *(() if config.sweep.m is not None else ("m",))}
        spread = {axis: sorted({k[axis] for k in keys}, key=lambda v: (str(type(v)), v))
                  for axis in keys[0] if axis not in derived} if keys else {}
        several = {axis: [str(v) for v in values] for axis, values in spread.items()
                   if len(values) > 1}
        shown = "; ".join(f"{axis}: {', '.join(values)}" for axis, values in several.items())
        axis = next(iter(several), "n")
        raise UsageError(f"find measures one cell, and the sweep gives {backend} {len(found)} "
                         f"({shown}): pick one with --cell {_axis_name(axis)}="
                         f"{several.get(axis, ['…'])[0]}")
    return data, config


def entry_name(data: dict[str, Any]) -> str:
    """What the narrowed config's one backend entry names: a built-in, a plugin's name or an
    import path (what the registry resolves, where the label is only the rows' name)."""
    entry = data["backends"][0]
    return str(entry["name"]) if isinstance(entry, dict) else str(entry)


def _names(entry: Any) -> set[str]:
    if isinstance(entry, str):
        return {entry}
    if isinstance(entry, dict):
        return {str(entry.get("name")), *([str(entry["label"])] if entry.get("label") else [])}
    return set()


def _axis_name(key: str) -> str:
    """A cell key's column → the sweep axis that sets it."""
    return {"threads_requested": "threads"}.get(key, key)


def cell_text(config: config_module.Config, backend: str) -> str:
    """The one cell, as the steps name it: `kernel n=256 m=256 d_k=16 float32`."""
    (cell,) = expand(config, [backend])
    key = cell.key.as_dict()
    parts = [f"{name}={key[name]}" for name in ("n", "m", "d_k") if key.get(name) is not None]
    extra = [f"{name}={value}" for name, value in key.items()
             if name not in ("backend", "n", "m", "d_k", "dtype", "environment", "preset")
             and value not in (None, False, 1, "kernel", "warm")]
    return " ".join([backend, *parts, str(key["dtype"]), *extra])


def write(data: dict[str, Any], path: Path, environments: list[dict[str, Any]]) -> Path:
    """A step's config: the narrowed one with its two environments."""
    path.write_text(yaml.safe_dump({**data, "environments": environments}, sort_keys=False),
                    encoding="utf-8")
    return path
