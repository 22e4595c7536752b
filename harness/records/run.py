"""A run directory, read back — the one reader every tool downstream goes through.

What a run directory looks like from outside is known here and nowhere else: its file names,
whether a folder is one (`is_run_dir`, `check_run_dir`), which runs a folder holds
(`find_runs`), its meta.json typed (`read_meta` → `RunMeta`), and its tables migrated from any
schema version (records/migrate.py) and typed (`load_run` → `Run`; `load_summaries` for
many). The writer (records/results.py) writes the same names. compare, history, plots, report,
merge, the store, the Slurm driver and the public API (`qkbench.load_run`) read runs here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qkbench.errors import UsageError
from qkbench.records.record import FAILED_STATUSES, SummaryRecord, with_cell_keys

if TYPE_CHECKING:  # pandas loads only when a run is read: `import qkbench` stays cheap
    import pandas as pd

PathLike = str | os.PathLike

META_FILE = "meta.json"
SUMMARY_FILE = "summary.parquet"  # present once the run has finished: what marks a run
SUMMARY_CSV_FILE = "summary.csv"
SAMPLES_FILE = "samples.parquet"
#: A finished run's own files (the append-only logs they are built from and the figures aside).
RUN_FILES = (META_FILE, SUMMARY_FILE, SUMMARY_CSV_FILE, SAMPLES_FILE)
#: How deep `find_runs` looks inside a folder: a results store files its runs as
#: STORE/<machine>/<commit>/<run> (records/store.py).
SEARCH_DEPTH = 3


# ---------------------------------------------------------------------------------------------
# meta.json


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class RunMeta:
    """A run's meta.json, read: the fields tools read, typed, and the whole file as `raw`.

    A key the file lacks (an older run) reads as None or empty, never as an error; what no
    field names is still in `raw` (docs/run-directory.md describes every key)."""

    raw: dict[str, Any]  # the file as read; copy it before changing it
    schema_version: int  # 1: a run directory from before the key existed
    state: str | None  # running, finished, interrupted (a merge: incomplete); None: unrecorded
    config: dict[str, Any]  # the config as parsed and validated
    config_name: str | None
    config_text: str | None  # the config file as its author wrote it
    config_file: str | None
    backend_labels: tuple[str, ...]
    shard_index: int | None
    shard_count: int | None
    environment: dict[str, Any]  # the main process's fingerprint (machine/environment.py)
    environments: dict[str, Any]  # a run with --env: name → what that interpreter reported
    calibration: dict[str, Any] | None  # the machine's speed at the start and end
    wall_s: float | None
    missing_cells: int | None  # a merge: cells of the sweep that no shard holds

    @classmethod
    def from_dict(cls, raw: Any) -> RunMeta:
        """ValueError when `raw` is no mapping or has an unusable schema_version."""
        if not isinstance(raw, dict):
            raise ValueError(f"{META_FILE} is not a mapping")
        version = raw.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"{META_FILE} has schema_version {version!r}")
        config, shard = _mapping(raw.get("config")), _mapping(raw.get("shard"))
        wall = raw.get("wall_s")
        return cls(
            raw=raw, schema_version=version, state=_text(raw.get("state")), config=config,
            config_name=_text(config.get("name")), config_text=_text(raw.get("config_text")),
            config_file=_text(raw.get("config_file")),
            backend_labels=tuple(str(b["label"]) for b in raw.get("backends") or []
                                 if isinstance(b, dict) and "label" in b),
            shard_index=shard.get("index"), shard_count=shard.get("count"),
            environment=_mapping(raw.get("environment")),
            environments=_mapping(raw.get("environments")),
            calibration=raw.get("calibration") if isinstance(raw.get("calibration"), dict)
            else None,
            wall_s=float(wall) if isinstance(wall, (int, float)) else None,
            missing_cells=raw.get("missing_cells"))

    @property
    def git(self) -> dict[str, Any]:
        return _mapping(self.environment.get("git"))

    @property
    def commit(self) -> str | None:
        """The measured checkout's git commit; None outside a checkout (or unrecorded)."""
        return _text(self.git.get("commit"))

    @property
    def dirty(self) -> bool | None:
        """Whether that checkout had uncommitted changes; None when unknown."""
        return self.git.get("dirty")

    @property
    def created_utc(self) -> str:
        return str(self.environment.get("created_utc") or "")

    @property
    def hostname(self) -> str | None:
        return _text(self.environment.get("hostname"))

    @property
    def hardware_key(self) -> str | None:
        return _text(self.environment.get("hardware_key"))

    @property
    def comparability_key(self) -> str | None:
        """Equal for runs of the same hardware and software (machine/environment.py)."""
        return _text(self.environment.get("comparability_key"))


def read_meta(folder: PathLike, *, missing_ok: bool = False) -> RunMeta:
    """A run directory's meta.json, typed. UsageError when it is absent (unless `missing_ok`:
    then an empty one) or unreadable."""
    path = Path(folder) / META_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return RunMeta.from_dict({})
        raise UsageError(f"{folder} is not a qkbench run directory (no readable {META_FILE})"
                         ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return RunMeta.from_dict(json.loads(text))
    except ValueError as exc:
        raise UsageError(f"cannot read run directory {folder}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Which folders are runs


def is_run_dir(path: PathLike) -> bool:
    """A finished (or interrupted) run directory: one whose tables were written."""
    return os.path.isfile(os.path.join(path, SUMMARY_FILE))


def check_run_dir(path: PathLike) -> Path:
    """The path, when it is a run directory with tables; else UsageError saying why not."""
    if not os.path.isdir(path):
        raise UsageError(f"run directory not found: {path}")
    if not is_run_dir(path):
        raise UsageError(f"{path} is not a finished run directory (no {SUMMARY_FILE})")
    return Path(path)


def runs_below(folder: PathLike, depth: int = SEARCH_DEPTH) -> list[Path]:
    """The run directories nearest below a folder: its children when any of them is a run
    (`results/`), else their children, and so on `depth` levels down (a results store, or one
    machine's folder in it). Only the nearest level counts, so a folder of runs does not also
    take in the runs filed in a subfolder (`results/baselines/`). In path order."""
    level = [Path(folder)]
    for _ in range(depth):
        level = sorted(child for parent in level for child in _subfolders(parent))
        found = [path for path in level if is_run_dir(path)]
        if found or not level:
            return found
    return []


def _subfolders(folder: Path) -> Iterable[Path]:
    try:
        children = list(folder.iterdir())
    except OSError:
        return []
    # Hidden folders are a run's scratch (.inputs/) or a store copy under way (.x.partial).
    return [child for child in children if child.is_dir() and not child.name.startswith(".")]


def find_runs(paths: Sequence[PathLike]) -> list[Path]:
    """The runs the paths name: a run directory itself, or the runs below a folder
    (`runs_below`: results/, a results store, one machine's folder in it). Each run once
    (resolved), in the order given. UsageError for a path that is no folder or holds no run."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UsageError(f"not a directory: {path}")
        if is_run_dir(path):
            found.append(path)
            continue
        inside = runs_below(path)
        if not inside:
            raise UsageError(f"{path} is neither a run directory nor a folder holding any "
                             f"(a finished run has {SUMMARY_FILE})")
        found += inside
    return list(dict.fromkeys(p.resolve() for p in found))


# ---------------------------------------------------------------------------------------------
# Tables


@dataclass
class Run:
    """A finished (or interrupted) run directory, read back.

    `meta` is meta.json as a dict (as written: the public API promises a mapping); `about` is
    the same file typed (`RunMeta`)."""

    path: Path
    summary: pd.DataFrame  # one row per cell (docs/run-directory.md lists the columns)
    samples: pd.DataFrame  # one row per raw sample
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def about(self) -> RunMeta:
        """meta.json typed: state, config name and text, fingerprint, git commit, …"""
        return RunMeta.from_dict(self.meta)

    @property
    def state(self) -> str:
        """'finished', 'interrupted' or 'running' (a run that died without finishing); a run
        directory from before the key was written had finished."""
        return self.about.state or "finished"

    @property
    def failed(self) -> pd.DataFrame:
        """The rows of cells that failed (mismatch, error, crash, timeout, oom, …)."""
        return self.summary[self.summary["status"].isin(FAILED_STATUSES)]

    @property
    def environment(self) -> dict[str, Any]:
        return self.about.environment

    @property
    def commit(self) -> str | None:
        return self.about.commit

    @property
    def config_name(self) -> str:
        """The config's name, or the folder's for a run that does not record one."""
        return self.about.config_name or self.path.name

    def records(self) -> list[SummaryRecord]:
        """The summary as typed records, one per cell (fields: docs/run-directory.md)."""
        return [SummaryRecord.from_row(row) for row in self.summary.to_dict("records")]

    def keyed(self) -> Run:
        """The same run with `_cell`, `_group` and `threads_key` columns on both tables (see
        records.record.with_cell_keys): what tools that match cells across runs work on."""
        if "_cell" in self.summary:
            return self
        return Run(self.path, with_cell_keys(self.summary), with_cell_keys(self.samples),
                   self.meta)

    def __repr__(self) -> str:
        counts = self.summary["status"].value_counts().to_dict() if len(self.summary) else {}
        return f"Run({str(self.path)!r}, {self.state}, cells={counts})"


def read_tables(folder: PathLike, with_samples: bool = True
                ) -> tuple[pd.DataFrame, pd.DataFrame, RunMeta]:
    """(summary, samples, meta) of a run directory as stored, migrated to the current schema
    but not yet typed: the one place a run's tables are opened (`load_run` and
    `load_summaries` type them). Without `with_samples` the samples table is empty."""
    import pandas as pd

    from qkbench.records.migrate import migrate

    folder = check_run_dir(folder)
    meta = read_meta(folder, missing_ok=True)
    try:
        samples_path = folder / SAMPLES_FILE
        summary, samples = migrate(pd.read_parquet(folder / SUMMARY_FILE),
                                   pd.read_parquet(samples_path)
                                   if with_samples and samples_path.is_file()
                                   else pd.DataFrame(), meta.raw)
        if "backend" not in summary or summary["backend"].isna().any():
            raise ValueError(f"{SUMMARY_FILE} has rows without a backend")
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot read run directory {folder}: {exc}") from None
    return summary, samples, meta


def load_run(path: PathLike | Run) -> Run:
    """A run directory of any schema version, migrated on read, as a `Run` (`.summary`,
    `.samples`, `.meta`, `.about`); a `Run` given is returned as it is. The one loader, and
    the public `qkbench.load_run`. UsageError when the folder is not a readable run."""
    if isinstance(path, Run):
        return path
    from qkbench.records.results import typed_samples, typed_summary

    summary, samples, meta = read_tables(path)
    try:
        summary, samples = typed_summary(summary), typed_samples(samples)
    except (ValueError, KeyError) as exc:
        raise UsageError(f"cannot read run directory {path}: {exc}") from None
    return Run(Path(path), summary, samples, meta.raw)


def load_summaries(paths: Sequence[PathLike]) -> list[Run]:
    """Many finished run directories' summaries (no samples), keyed like `Run.keyed()`: what
    reading hundreds of runs for a timeline needs. Each table is read and migrated on its own
    and the typing and cell keys are applied once to all of them together, which is what
    makes it fast (the typing costs about the same for one run as for a thousand)."""
    import pandas as pd

    from qkbench.records.results import typed_samples, typed_summary

    tables, metas = [], []
    for number, path in enumerate(paths):
        summary, _, meta = read_tables(path, with_samples=False)
        tables.append(summary.assign(_run_number=number))
        metas.append(meta.raw)
    # Typed together only with tables of the same columns: a column one run lacks gets its
    # default when typed, which a concatenation would have turned into empty values.
    same_columns: dict[tuple[str, ...], list[pd.DataFrame]] = {}
    for table in tables:
        same_columns.setdefault(tuple(table.columns), []).append(table)
    parts: dict[int, pd.DataFrame] = {}
    for group in same_columns.values():
        together = pd.concat(group, ignore_index=True)
        numbers = together["_run_number"]
        typed = with_cell_keys(typed_summary(together.drop(columns="_run_number")))
        for number, part in typed.groupby(numbers.to_numpy(), sort=False):
            parts[int(number)] = part.reset_index(drop=True)
    no_rows = with_cell_keys(typed_summary(pd.DataFrame()))
    no_samples = typed_samples(pd.DataFrame())
    return [Run(Path(path), parts.get(number, no_rows), no_samples, metas[number])
            for number, path in enumerate(paths)]

