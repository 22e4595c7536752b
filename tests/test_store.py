"""The results store: runs filed by machine and commit, dirty trees apart, merged by copying."""

from __future__ import annotations

import json
import shutil

from hypothesis import given, settings
from hypothesis import strategies as st
from qkbench.cli import main
from qkbench.records.store import commit_name, entries, machine_name

from tests.test_compare import ENVIRONMENT, write_run

OTHER_MACHINE = {**ENVIRONMENT, "cpu": {"model": "Other CPU 42", "logical_cores": 8},
                 "comparability_key": "bbbbbbbbbbbb"}


def environment(commit: str, dirty: bool = False, machine: dict = ENVIRONMENT, day: int = 1):
    return {**machine, "created_utc": f"2026-02-{day:02d}T00:00:00+00:00",
            "git": {"commit": commit, "dirty": dirty}}


def one_run(folder, env, value=2e-3, seed=0):
    return write_run(folder, {("numpy", 256): 1e-3, ("other", 256): value}, seed=seed,
                     environment=env)


def test_runs_are_filed_by_machine_and_commit(tmp_path, capsys):
    a = one_run(tmp_path / "runs" / "a", environment("1111111111111111aaaa", day=1))
    b = one_run(tmp_path / "runs" / "b", environment("2222222222222222bbbb", day=2))
    c = one_run(tmp_path / "runs" / "c", environment("1111111111111111aaaa", day=3,
                                                     machine=OTHER_MACHINE))
    store = tmp_path / "store"
    assert main(["store", "add", str(a), str(b), str(c), str(store)]) == 0
    assert "3 run(s) added" in capsys.readouterr().out
    test_cpu, other_cpu = machine_name(ENVIRONMENT), machine_name(OTHER_MACHINE)
    assert test_cpu == "test-cpu-9000-2c-aaaaaaaa" and other_cpu.startswith("other-cpu-42-8c-")
    assert (store / test_cpu / "111111111111" / "a" / "summary.parquet").is_file()
    assert (store / test_cpu / "222222222222" / "b" / "samples.parquet").is_file()
    assert (store / other_cpu / "111111111111" / "c" / "meta.json").is_file()
    assert (store / test_cpu / "machine.json").is_file()
    assert [e.path.name for e in entries(store)] == ["a", "b", "c"]  # time order
    assert main(["store", "list", str(store)]) == 0
    text = capsys.readouterr().out
    assert "3 run(s) on 2 machine(s)" in text and "222222222222" in text
    assert "Other CPU 42" in text


def test_history_reads_every_run_of_a_store(tmp_path, capsys):
    runs = [one_run(tmp_path / "runs" / f"r{i}", environment(f"{i:02d}" * 10, day=i + 1),
                    value=2e-3 * (1.3 if i >= 4 else 1.0), seed=i) for i in range(8)]
    store = tmp_path / "store"
    assert main(["store", "add", *map(str, runs), str(store)]) == 0
    assert main(["history", str(store), "--out", str(tmp_path / "h"), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "8 run(s)" in text and "1 lasting change(s)" in text and "commit 0404040404" in text
    other = one_run(tmp_path / "elsewhere", environment("99" * 10, machine=OTHER_MACHINE))
    assert main(["store", "add", str(other), str(store)]) == 0
    one_machine = store / machine_name(ENVIRONMENT)
    assert main(["history", str(one_machine), "--out", str(tmp_path / "h"), "--no-plots"]) == 0
    assert "8 run(s)" in capsys.readouterr().out


def test_adding_a_run_twice_keeps_one_copy(tmp_path, capsys):
    a = one_run(tmp_path / "a", environment("1111111111111111aaaa"))
    store = tmp_path / "store"
    assert main(["store", "add", str(a), str(store)]) == 0
    assert main(["store", "add", str(a), str(store)]) == 0
    assert "already stored" in capsys.readouterr().out
    assert len(entries(store)) == 1


def test_a_different_run_of_the_same_name_is_kept_beside(tmp_path):
    first = one_run(tmp_path / "x" / "run", environment("1111111111111111aaaa", day=1))
    second = one_run(tmp_path / "y" / "run", environment("1111111111111111aaaa", day=2))
    store = tmp_path / "store"
    assert main(["store", "add", str(first), str(second), str(store)]) == 0
    assert sorted(e.path.name for e in entries(store)) == ["run", "run-2"]


def test_a_dirty_tree_is_never_filed_under_the_clean_commit(tmp_path):
    clean = one_run(tmp_path / "clean", environment("1111111111111111aaaa"))
    dirty = one_run(tmp_path / "dirty", environment("1111111111111111aaaa", dirty=True))
    store = tmp_path / "store"
    assert main(["store", "add", str(clean), str(dirty), str(store)]) == 0
    filed = {e.path.name: e.commit for e in entries(store)}
    assert filed == {"clean": "111111111111", "dirty": "111111111111-dirty"}


@given(commit=st.text("0123456789abcdef", min_size=7, max_size=40),
       dirty=st.sampled_from([True, False, None]))
@settings(max_examples=60, deadline=None)
def test_only_a_tree_known_clean_gets_the_bare_commit(commit, dirty):
    name = commit_name({"git": {"commit": commit, "dirty": dirty}})
    assert name.startswith(commit[:12])
    assert name.endswith("-dirty") == (dirty is not False)
    assert commit_name({"git": {"commit": None, "dirty": None}}) == "no-commit"


def test_two_stores_merge_by_copying_folders(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    a = one_run(tmp_path / "a", environment("1111111111111111aaaa", day=1))
    b = one_run(tmp_path / "b", environment("2222222222222222bbbb", day=2,
                                            machine=OTHER_MACHINE))
    shared = one_run(tmp_path / "s", environment("3333333333333333cccc", day=3))
    assert main(["store", "add", str(a), str(shared), str(here)]) == 0
    assert main(["store", "add", str(b), str(shared), str(there)]) == 0
    shutil.copytree(there, here, dirs_exist_ok=True)  # what `cp -r there/. here/` does
    assert sorted(e.path.name for e in entries(here)) == ["a", "b", "s"]


def test_an_unfinished_run_or_a_missing_one_is_refused(tmp_path, capsys):
    run = one_run(tmp_path / "a", environment("1111111111111111aaaa"))
    meta = (run / "meta.json").read_text().replace('"finished"', '"interrupted"')
    (run / "meta.json").write_text(meta)
    assert main(["store", "add", str(run), str(tmp_path / "store")]) == 2
    assert "resume it before storing" in capsys.readouterr().err
    assert main(["store", "add", str(tmp_path / "nope"), str(tmp_path / "store")]) == 2
    other = one_run(tmp_path / "b", environment("1111111111111111aaaa"))
    assert main(["store", "add", str(other), str(run)]) == 2  # the store was forgotten
    assert "the last argument is the store" in capsys.readouterr().err
    assert main(["store", "add", str(tmp_path / "store")]) == 2
    assert main(["store", "list", str(tmp_path / "nothing")]) == 2
    assert "not a results store" in capsys.readouterr().err


def test_run_with_store_files_the_finished_run(tmp_path):
    from tests.conftest import run_cli, write_config

    config = write_config(tmp_path, ["numpy"])
    store = tmp_path / "store"
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"), "--quiet",
                     "--store", str(store))
    assert result.returncode == 0, result.stderr
    [entry] = entries(store)
    meta_env = json.loads((tmp_path / "run" / "meta.json").read_text())["environment"]
    assert entry.machine == machine_name(meta_env) and entry.commit == commit_name(meta_env)
    assert "stored: " in result.stdout


def test_reading_many_summaries_at_once_gives_what_the_loader_gives(tmp_path):
    from pathlib import Path

    import pandas as pd
    from qkbench.records.run import load_run, load_summaries

    data = Path(__file__).resolve().parent / "data" / "runs"
    folders = [p for p in sorted(data.iterdir()) if (p / "summary.parquet").is_file()]
    folders.append(write_run(tmp_path / "new", {("numpy", 256): 1e-3, ("other", 512): 2e-3},
                             status={("other", 512): "timeout"}, new_columns=True))
    folders.append(one_run(tmp_path / "plain", environment("1111111111111111aaaa")))
    together = load_summaries(folders)
    assert len(together) == len(folders) >= 3
    for folder, run in zip(folders, together):
        alone = load_run(folder).keyed()
        pd.testing.assert_frame_equal(run.summary, alone.summary, check_dtype=True)
        assert run.meta == alone.meta and run.path == Path(folder)


@given(model=st.text(max_size=80), cores=st.one_of(st.none(), st.integers(1, 512)),
       key=st.text("0123456789abcdef", min_size=12, max_size=12),
       gpu=st.one_of(st.none(), st.text(max_size=40)))
@settings(max_examples=100, deadline=None)
def test_a_machine_name_is_one_safe_folder_name_that_carries_its_key(model, cores, key, gpu):
    env = {"cpu": {"model": model, "logical_cores": cores}, "comparability_key": key,
           "gpus": [{"name": gpu}] if gpu is not None else []}
    name = machine_name(env)
    assert name and "/" not in name and not name.startswith(".") and name.isascii()
    assert all(c.isalnum() or c == "-" for c in name)
    assert name.endswith(key[:8])
    other = machine_name({**env, "comparability_key": ("f" if key[0] != "f" else "0") + key[1:]})
    assert other != name
