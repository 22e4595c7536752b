"""A run directory, read back — the one object every tool downstream reads.

`load_run` is the one loader (any schema version, migrated by records/migrate.py); compare,
history, plots, report and the public API (`qkbench.load_run`) all read runs through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qkbench.records.record import FAILED_STATUSES, SummaryRecord, with_cell_keys

if TYPE_CHECKING:  # pandas loads only when a run is read: `import qkbench` stays cheap
    import pandas as pd


@dataclass
class Run:
    """A finished (or interrupted) run directory."""

    path: Path
    summary: pd.DataFrame  # one row per cell (docs/run-directory.md lists the columns)
    samples: pd.DataFrame  # one row per raw sample
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """'finished', 'interrupted' or 'running' (a run that died without finishing)."""
        return str(self.meta.get("state", "finished"))

    @property
    def failed(self) -> pd.DataFrame:
        """The rows of cells that failed (mismatch, error, crash, timeout, oom, …)."""
        return self.summary[self.summary["status"].isin(FAILED_STATUSES)]

    @property
    def environment(self) -> dict[str, Any]:
        return self.meta.get("environment") or {}

    @property
    def commit(self) -> str | None:
        return (self.environment.get("git") or {}).get("commit")

    @property
    def config_name(self) -> str:
        return str((self.meta.get("config") or {}).get("name") or self.path.name)

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


def load_run(path: str | os.PathLike | Run) -> Run:
    """A run directory, any schema version, as a `Run`. Raises UsageError when the folder is
    not a readable run directory."""
    if isinstance(path, Run):
        return path
    from qkbench.records.results import load_run as load_tables

    summary, samples, meta = load_tables(Path(path))
    return Run(Path(path), summary, samples, meta)


def load_summaries(paths: Sequence[str | os.PathLike]) -> list[Run]:
    """Many finished run directories' summaries (no samples), keyed like `Run.keyed()`: what
    reading hundreds of runs for a timeline needs. Each table is read and migrated on its own
    and the typing and cell keys are applied once to all of them together, which is what
    makes it fast (the typing costs about the same for one run as for a thousand)."""
    import pandas as pd

    from qkbench.records.results import empty_samples, read_summary_table, typed_summary

    tables, metas = [], []
    for number, path in enumerate(paths):
        summary, meta = read_summary_table(Path(path))
        tables.append(summary.assign(_run_number=number))
        metas.append(meta)
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
    no_rows, no_samples = with_cell_keys(typed_summary(pd.DataFrame())), empty_samples()
    return [Run(Path(path), parts.get(number, no_rows), no_samples, metas[number])
            for number, path in enumerate(paths)]
