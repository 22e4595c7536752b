"""Every config shipped in configs/ runs end to end through the CLI: each shrunk to the smallest
value of each size axis (n, m, d_k, batch) and a tiny timing budget, every other axis (dtypes,
presets, masks, phases, threads, backends and their options) as shipped. Every cell
must be `ok`, or `skipped` with its reason — and skipped only for a backend that cannot run
here (a GPU backend without a GPU), never for one that can.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import pytest
import yaml

import qkbench
from qkbench import cli
from qkbench.backends.registry import BackendSpec, load_class
from qkbench.plan.config import resolve_backends
from qkbench.plan.sweep import expand
from tests.conftest import REPO

SHIPPED = sorted((REPO / "configs").glob("*.yaml"))
SIZE_AXES = ("n", "m", "d_k", "batch")
# Precision is not what this checks: the fewest samples the timing step allows, no warm-up, no
# machine check (its canary warms up for seconds, and it only sets rounds aside).
TINY_TIMING = {"budget_s": 0.02, "target_rel_ci": 0.5, "min_samples": 6, "max_samples": 6,
               "warmup_s": 0.0, "machine_check": False}
# One worker per backend: each more costs a process start-up and a library import per config
# (38 s of this module's 50 s on 2 cores with two). What a second worker does differently, its
# checks on a random share of the reference's rows, is tested where it matters, causal cells
# included: test_attention.py and test_processes.py run cells in two and three processes.
MAX_PROCESSES = 1


def shrunk(path: Path, folder: Path) -> Path:
    """A copy of the shipped config at its smallest sizes and a tiny budget."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    shipped = qkbench.load_config(path)
    for axis in SIZE_AXES:
        if data["sweep"].get(axis) is not None:
            data["sweep"][axis] = [min(shipped.sweep.sizes(axis))]
    data["timing"] = {**data.get("timing", {}), **TINY_TIMING,
                      "processes": min(shipped.timing.processes, MAX_PROCESSES)}
    copy = folder / path.name
    copy.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return copy


@functools.cache
def why_not_here(spec: BackendSpec) -> str | None:
    """The backend's own reason it cannot run on this machine (None: it can), asked here,
    apart from the run."""
    return spec.create().unavailable()


def test_every_shipped_config_is_covered():
    assert len(SHIPPED) >= 10 and {"quick.yaml", "llm-prefill.yaml", "llm-decode.yaml"} <= \
        {path.name for path in SHIPPED}


# Seconds each on 2 cores: a run starts a worker process per backend, and each imports its
# library (torch, numba; jax and triton only to learn that there is no GPU).
@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[path.name for path in SHIPPED])
def test_shipped_config_runs_ok_at_its_smallest_sizes(path, tmp_path):
    config_path = shrunk(path, tmp_path)
    config = qkbench.load_config(config_path)
    specs = resolve_backends(config)
    cannot_run = {spec.label: why_not_here(spec) for spec in specs}
    out = tmp_path / "run"
    code = cli.main(["run", str(config_path), "--out", str(out), "--quiet", "--no-plots"])
    summary = pd.read_parquet(out / "summary.parquet")
    assert len(summary) == len(expand(config, [spec.label for spec in specs]))
    shown = summary[["backend", "status", "reason"]].to_string()
    assert set(summary["status"]) <= {"ok", "skipped"}, shown
    assert code == 0, shown
    dtypes = {spec.label: load_class(spec.path).dtypes for spec in specs}
    for _, row in summary.iterrows():
        why_not = cannot_run[row["backend"]]
        if why_not is None and row["dtype"] not in dtypes[row["backend"]]:
            why_not = f"{row['backend']} does not support {row['dtype']}"
        if why_not is None:
            assert row["status"] == "ok", shown
        else:
            assert row["status"] == "skipped" and row["reason"] == why_not, shown
