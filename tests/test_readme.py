"""The README's "What you get" table is the committed run it quotes, row for row
(benchmarks/readme_table.py regenerates it): a table that outlives its run fails here."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import REPO

_SPEC = importlib.util.spec_from_file_location("readme_table",
                                               REPO / "benchmarks" / "readme_table.py")
readme_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(readme_table)


def test_the_readme_quotes_a_committed_default_run():
    run, _d_k, _table = readme_table.quoted()
    assert run.is_relative_to(REPO / "results" / "reference"), run
    meta = json.loads((run / "meta.json").read_text())
    assert meta["config"]["name"] == "default"
    assert meta.get("state") == "finished"
    assert (run / "figures" / "throughput.png").is_file()
    assert (run / "README.md").is_file(), "a reference run says what it shows"
    # The README's figure is the run's.
    assert (REPO / "docs" / "throughput.png").read_bytes() == \
        (run / "figures" / "throughput.png").read_bytes()


def test_the_readme_table_is_the_runs_table():
    run, d_k, table = readme_table.quoted()
    assert table == readme_table.table(run, d_k), \
        "README.md's table is stale: python benchmarks/readme_table.py --write"
    assert table.count("\n") >= 4  # a header, its rule and rows


def test_a_changed_cell_is_caught():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    run, d_k, table = readme_table.quoted(readme)
    row = table.splitlines()[2]
    cells = row.split("|")
    cells[-2] = " 1 s "
    stale = readme.replace(row, "|".join(cells), 1)
    _, _, changed = readme_table.quoted(stale)
    assert changed != readme_table.table(run, d_k)
