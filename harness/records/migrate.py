"""Older run directories, brought up to the current record once, on read.

Each migration takes the raw tables of schema version v to v + 1; `load_run` applies them in
order, so every tool downstream sees one layout. A run directory without `schema_version` in
its meta.json is version 1 (wave 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from qkbench.records.meta import SCHEMA_VERSION

Tables = tuple[pd.DataFrame, pd.DataFrame]


def _v1_to_v2(summary: pd.DataFrame, samples: pd.DataFrame) -> Tables:
    """Version 1 lacked the shape-derived figures in its first runs and had no `info` column:
    recompute what the shape alone determines (each input read once, S written once); leave
    what was never measured empty."""
    from qkbench.plan.config import ITEMSIZE

    summary = summary.copy()
    n, m, d_k = (pd.to_numeric(summary[c], errors="coerce").astype("float64")
                 for c in ("n", "m", "d_k"))
    itemsize = summary["dtype"].map(ITEMSIZE).astype("float64")
    derived = {"flops": 2.0 * n * m * d_k, "bytes": (n * d_k + m * d_k + n * m) * itemsize}
    for column, values in derived.items():
        current = pd.to_numeric(summary.get(column, pd.Series(index=summary.index, dtype=float)),
                                errors="coerce")
        summary[column] = current.fillna(values)
    flops, nbytes = summary["flops"].astype("float64"), summary["bytes"].astype("float64")
    summary["intensity"] = pd.to_numeric(summary.get("intensity"), errors="coerce").fillna(
        flops / nbytes) if "intensity" in summary else flops / nbytes
    median = pd.to_numeric(summary.get("median_s"), errors="coerce")
    ok = summary["status"] == "ok"
    for column, total in (("gflops", flops), ("gbps", nbytes)):
        current = pd.to_numeric(summary[column], errors="coerce") if column in summary else (
            pd.Series(float("nan"), index=summary.index))
        summary[column] = current.where(~ok | current.notna(), total / median / 1e9)
    if "info" not in summary:
        summary["info"] = "{}"
    return summary, samples


MIGRATIONS: dict[int, Callable[[pd.DataFrame, pd.DataFrame], Tables]] = {1: _v1_to_v2}


def migrate(summary: pd.DataFrame, samples: pd.DataFrame, meta: dict[str, Any]) -> Tables:
    """The tables of a run directory written with `meta["schema_version"]`, in the current
    layout. Raises ValueError for a version newer than this qkbench knows."""
    version = meta.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"meta.json has schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(f"written with schema_version {version}; this qkbench reads up to "
                         f"{SCHEMA_VERSION} (upgrade qkbench)")
    while version < SCHEMA_VERSION:
        summary, samples = MIGRATIONS[version](summary, samples)
        version += 1
    return summary, samples
