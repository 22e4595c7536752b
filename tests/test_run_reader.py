"""One reader of a run directory (records/run.py): it alone names the files, recognises a run,
finds runs in folders and stores, types meta.json; a report reads each run once; a run
directory written before the typed record still loads and compares with one written now."""

from __future__ import annotations

import ast
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import qkbench
from qkbench.errors import UsageError
from qkbench.records import run as reader
from qkbench.records.meta import SCHEMA_VERSION
from qkbench.records.run import RunMeta, find_runs, is_run_dir, read_meta, runs_below

from tests.conftest import FAST_TIMING

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "runs"
LAPTOP, GPUBOX = DATA / "laptop", DATA / "gpubox"

#: Who may spell a run directory's file names: the reader, the writer, and the shell text of
#: the Slurm scripts (which run where no Python of ours does).
MAY_NAME_FILES = {"records/run.py", "records/results.py", "cluster/slurm_scripts.py"}
FILE_NAME = re.compile(r"(.*/)?(meta\.json|summary\.parquet|summary\.csv|samples\.parquet)")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def test_only_the_reader_and_the_writer_name_the_run_files():
    """A path built from `meta.json` or `summary.parquet` anywhere else is a second reader."""
    wrong = []
    for path in sorted((REPO / "harness").rglob("*.py")):
        where = path.relative_to(REPO / "harness").as_posix()
        if where in MAY_NAME_FILES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings and FILE_NAME.fullmatch(node.value)):
                wrong.append(f"{where}:{node.lineno} {node.value!r}")
    assert not wrong, wrong


def test_the_writer_writes_what_the_reader_reads(tmp_path):
    from qkbench.records.results import RunWriter

    writer = RunWriter(tmp_path / "run")
    writer.write_meta({"state": "finished", "schema_version": SCHEMA_VERSION})
    writer.finish()
    assert is_run_dir(tmp_path / "run")
    assert {p.name for p in (tmp_path / "run").iterdir()} >= set(reader.RUN_FILES)
    assert read_meta(tmp_path / "run").state == "finished"


def _fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / reader.SUMMARY_FILE).write_bytes(b"")  # recognised by its table alone
    return folder


def test_find_runs_takes_the_nearest_runs_below_a_folder(tmp_path):
    results = tmp_path / "results"
    a, b = _fake_run(results / "a"), _fake_run(results / "b")
    _fake_run(results / "baselines" / "old")  # filed deeper: not part of results/'s runs
    (results / "killed").mkdir()  # no tables yet: not a run
    (results / "killed" / reader.META_FILE).write_text("{}")
    assert find_runs([results]) == [a.resolve(), b.resolve()]
    assert find_runs([a, results]) == [a.resolve(), b.resolve()]  # each run once
    assert runs_below(results / "baselines") == [results / "baselines" / "old"]
    store = tmp_path / "store"  # STORE/<machine>/<commit>/<run>, as records/store.py files it
    runs = [_fake_run(store / "m1" / "c1" / "r1"), _fake_run(store / "m1" / "c2" / "r1"),
            _fake_run(store / "m2" / "c1" / "r1")]
    (store / "m1" / "c1" / ".r2.partial").mkdir()  # a copy under way is never a run
    assert find_runs([store]) == [r.resolve() for r in runs]
    assert find_runs([store / "m1"]) == [r.resolve() for r in runs[:2]]
    with pytest.raises(UsageError, match="neither a run directory"):
        find_runs([tmp_path / "results" / "killed"])
    with pytest.raises(UsageError, match="not a directory"):
        find_runs([tmp_path / "nope"])


def test_meta_json_is_read_into_a_typed_record(tmp_path):
    old = read_meta(LAPTOP)
    assert isinstance(old, RunMeta) and old.schema_version == 1  # written before the key
    assert old.state == "finished" and old.config_name == "tiny"
    assert old.config_text and old.config["name"] == "tiny"
    assert old.commit is None and old.dirty is None and old.created_utc.startswith("2026-")
    assert old.hostname == "vm" and old.raw["config_file"] == old.config_file
    run = qkbench.load_run(LAPTOP)
    assert run.meta == old.raw and run.about == old  # `.meta` stays meta.json as a dict
    assert run.config_name == "tiny" and run.commit is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / reader.META_FILE).write_text("[1, 2]")
    with pytest.raises(UsageError, match="not a mapping"):
        read_meta(tmp_path / "bad")
    with pytest.raises(UsageError, match="no readable meta.json"):
        read_meta(tmp_path)
    assert read_meta(tmp_path, missing_ok=True).state is None


def test_there_is_one_load_run():
    from qkbench import api
    from qkbench.records import results

    assert qkbench.load_run is api.load_run is reader.load_run
    assert not hasattr(results, "load_run")


@pytest.fixture
def table_reads(monkeypatch) -> Counter:
    """How often each run directory's tables are opened (every load goes through
    `read_tables`)."""
    reads: Counter = Counter()
    read_tables = reader.read_tables

    def counted(folder, with_samples=True):
        reads[Path(folder).resolve()] += 1
        return read_tables(folder, with_samples)

    monkeypatch.setattr(reader, "read_tables", counted)
    return reads


def test_a_report_reads_each_run_once(table_reads, tmp_path):
    from qkbench.present import report

    built = report.build([GPUBOX], baseline=LAPTOP)
    assert not built.comparison.empty  # verdicts given, from the runs the figures drew
    assert table_reads == {GPUBOX.resolve(): 1, LAPTOP.resolve(): 1}
    table_reads.clear()
    report.write([GPUBOX, LAPTOP], baseline=LAPTOP, out=tmp_path / "report.html")
    # LAPTOP is named twice (a run, and the baseline): one read each time it is named
    assert table_reads == {GPUBOX.resolve(): 1, LAPTOP.resolve(): 2}


def test_compare_takes_runs_in_memory_without_reading_them_again(table_reads):
    base, candidate = qkbench.load_run(LAPTOP), qkbench.load_run(GPUBOX)
    table_reads.clear()
    qkbench.compare(base, candidate, allow_different_machines=True)
    assert not table_reads


def test_an_old_run_directory_compares_with_a_fresh_one(tmp_path):
    """The laptop run (schema 1, tests/data/README.md) against one written by this version:
    the cell they share gets a verdict, the rest are only on one side; a report of both
    compares them the same way."""
    copy = tmp_path / "old"
    shutil.copytree(LAPTOP, copy)
    fresh = qkbench.run({"name": "tiny", "sweep": {"n": [16], "d_k": [16],
                                                   "dtype": ["float32"]},
                         "backends": ["numpy"], "timing": FAST_TIMING}, out=tmp_path / "new")
    assert fresh.about.schema_version == SCHEMA_VERSION and fresh.about.state == "finished"
    for baseline, candidate in ((copy, fresh.path), (fresh.path, copy)):
        comparison = qkbench.compare(baseline, candidate, allow_different_machines=True)
        verdicts = {(c.key["backend"], c.key["n"], c.key["d_k"], c.key["dtype"]): c.verdict
                    for c in comparison.cells}
        shared = verdicts.pop(("numpy", 16, 16, "float32"))
        assert shared in {"same", "slower", "faster", "not comparable"}
        assert set(verdicts.values()) <= {"only in baseline", "only in candidate"}
    from qkbench.present import report

    built = report.build([fresh.path], baseline=copy)
    assert list(built.comparison["backend"]) == ["numpy"]
