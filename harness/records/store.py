"""A results store — run directories filed by the machine and the commit they measured.

A store is plain folders, one level per question a reader asks:

    STORE/<machine>/machine.json                 the machine's fingerprint (same for every run)
    STORE/<machine>/<commit>/<run>/meta.json     a copy of the run's tables and meta.json
                                   summary.parquet  summary.csv  samples.parquet

`<machine>` is a readable name made from the CPU (and GPU) plus a short comparability key
(hardware and software, machine/environment.py): runs under one machine folder are comparable.
`<commit>` is the measured qkbench checkout's commit, with `-dirty` when it had uncommitted
changes (such a run is never filed under the clean commit), or `no-commit` outside a checkout.
There is no index file: two stores merge by copying one's folders into the other
(`cp -r a/. b/`), and every reader walks the folders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qkbench.errors import UsageError
from qkbench.records.run import RUN_FILES, Run, RunMeta, is_run_dir, load_run, read_meta

#: What a stored copy of a run holds; the append-only logs and the figures stay behind (the
#: tables are built from the logs, the figures can be drawn again).
STORED_FILES = RUN_FILES
MACHINE_FILE = "machine.json"
#: The fingerprint fields machine.json keeps: what a person needs to tell machines apart.
MACHINE_FIELDS = ("hardware_key", "comparability_key", "cpu", "memory_gib", "gpus", "os",
                  "python", "blas", "libraries")
NO_COMMIT = "no-commit"


@dataclass(frozen=True)
class StoredRun:
    path: Path  # the run's folder inside the store
    machine: str
    commit: str  # the commit folder's name: a short hash, `<hash>-dirty` or `no-commit`
    config: str
    created_utc: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_name(environment: dict[str, Any]) -> str:
    """A folder name a person can read, unique per comparability key: e.g.
    `amd-epyc-9b45-2c-1f0e3a9b` (CPU model, logical cores, then the key)."""
    cpu = environment.get("cpu") or {}
    parts = [_slug(str(cpu.get("model") or "unknown-cpu"))[:40]]
    if cpu.get("logical_cores"):
        parts.append(f"{cpu['logical_cores']}c")
    gpus = environment.get("gpus") or []
    if gpus and isinstance(gpus[0], dict) and gpus[0].get("name"):
        parts.append(_slug(str(gpus[0]["name"]))[:24] + (f"x{len(gpus)}" if len(gpus) > 1 else ""))
    key = environment.get("comparability_key") or environment.get("hardware_key") or "nokey"
    parts.append(str(key)[:8])
    return "-".join(p for p in parts if p)


def commit_name(environment: dict[str, Any]) -> str:
    git = environment.get("git") or {}
    commit = git.get("commit")
    if not commit:
        return NO_COMMIT
    # An unknown dirtiness (None) is filed as dirty: only a tree known clean gets the commit.
    return str(commit)[:12] + ("" if git.get("dirty") is False else "-dirty")


def add(run_dir: Path, store: Path) -> tuple[StoredRun, bool]:
    """Copy one finished run directory into the store; (where it is, whether it was new).
    Adding the same run twice leaves one copy."""
    run = load_run(run_dir)
    if run.state != "finished":
        raise UsageError(f"{run_dir} is {run.state}, not finished: resume it before storing it")
    environment = run.environment
    machine, commit = machine_name(environment), commit_name(environment)
    folder = Path(store) / machine / commit
    target = folder / Path(run_dir).resolve().name
    suffix = 1
    while target.exists():
        if _same_run(target, run):
            return _entry(target, machine, commit, run.about), False
        suffix += 1
        target = folder / f"{Path(run_dir).resolve().name}-{suffix}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_machine(Path(store) / machine / MACHINE_FILE, environment)
        partial = folder / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for name in STORED_FILES:
            if (Path(run_dir) / name).is_file():
                shutil.copy2(Path(run_dir) / name, partial / name)
        os.replace(partial, target)  # a reader never sees half a run
    except OSError as exc:
        raise UsageError(f"cannot write to the store {store}: {exc.strerror or exc}") from None
    return _entry(target, machine, commit, run.about), True


def _same_run(stored_copy: Path, run: Run) -> bool:
    try:
        stored = read_meta(stored_copy)
    except UsageError:
        return False
    return stored.environment == run.environment and stored.config == run.about.config


def _write_machine(path: Path, environment: dict[str, Any]) -> None:
    facts = {name: environment.get(name) for name in MACHINE_FIELDS}
    text = json.dumps({"name": path.parent.name, **facts}, indent=2, sort_keys=True,
                      default=str) + "\n"
    if not path.is_file():  # same key, same facts: a copy from another store is identical
        path.write_text(text, encoding="utf-8")


def _entry(path: Path, machine: str, commit: str, meta: RunMeta) -> StoredRun:
    return StoredRun(path, machine, commit, meta.config_name or path.name, meta.created_utc)


def entries(store: Path) -> list[StoredRun]:
    """Every run in the store, in time order (created_utc, then folder)."""
    store = Path(store)
    if not store.is_dir():
        raise UsageError(f"not a results store (no such folder): {store}")
    found = []
    for path in _run_folders(store):
        try:
            meta = read_meta(path)
        except UsageError:
            continue  # an unreadable copy is skipped, never fatal to the rest
        found.append(_entry(path, path.parent.parent.name, path.parent.name, meta))
    return sorted(found, key=lambda e: (e.created_utc, str(e.path)))


def _run_folders(store: Path) -> Iterator[Path]:
    for machine in sorted(p for p in store.iterdir() if p.is_dir()):
        if not (machine / MACHINE_FILE).is_file():
            continue
        for commit in sorted(p for p in machine.iterdir() if p.is_dir()):
            for run in sorted(p for p in commit.iterdir()
                              if p.is_dir() and not p.name.startswith(".")):
                if is_run_dir(run):
                    yield run


def machines(store: Path) -> dict[str, dict[str, Any]]:
    """machine folder name → its machine.json."""
    found = {}
    for folder in sorted(p for p in Path(store).iterdir() if p.is_dir()):
        try:
            found[folder.name] = json.loads((folder / MACHINE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return found


def listing(store: Path) -> str:
    """`qkbench store list`: per machine, its commits with run counts, configs and dates."""
    runs = entries(store)
    if not runs:
        return f"{store}: empty store"
    known = machines(store)
    lines = [f"{store}: {len(runs)} run(s) on {len({r.machine for r in runs})} machine(s)"]
    for machine in sorted({r.machine for r in runs}):
        mine = [r for r in runs if r.machine == machine]
        cpu = (known.get(machine, {}).get("cpu") or {}).get("model", "?")
        lines.append(f"\n{machine}  ({cpu})")
        commits: dict[str, list[StoredRun]] = {}
        for run in mine:
            commits.setdefault(run.commit, []).append(run)
        for commit, group in commits.items():
            configs = ",".join(sorted({r.config for r in group}))
            dates = sorted(r.created_utc[:10] for r in group if r.created_utc)
            span = (dates[0] if dates and dates[0] == dates[-1]
                    else f"{dates[0]}..{dates[-1]}" if dates else "?")
            lines.append(f"  {commit:18} {len(group):3} run(s)  {configs:20} {span}")
    return "\n".join(lines)
