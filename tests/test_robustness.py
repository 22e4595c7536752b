"""Nothing lost: kill and resume, interrupted logs, shards and merge, memory guards."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from qkbench.cli import main
from qkbench.plan import config as config_module
from qkbench.records.results import finished_keys, kept_mask
from qkbench.cell_key import CELL_KEY, CellKey
from qkbench.plan.sweep import Shard, expand
from tests.conftest import REPO, cli_env, interruptible, read_summary, run_cli, write_config

# 12 cells of at least 0.3 s each (slow_config: two backends of 0.15 s): the run is still going
# when the tests stop it after 2 or 3 cells, and a resume has several left to run.
SLOW_SWEEP = {"n": [16, 24, 32], "dtype": ["float32", "float64"]}


def start_run(config, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "qkbench", "run", str(config), "--out",
                             str(out), "--no-progress", *extra], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)


def qkbench(capsys, *args):
    """`qkbench ARGS` in this process: (exit code, stdout, stderr). For commands that need no
    process of their own (nothing is killed or signalled), which saves a start-up each; the
    CLI's exit codes and messages come from the same function either way."""
    capsys.readouterr()
    code = main([*args, "--no-plots"] if args[0] == "run" else list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def wait_for_cells(out, count, timeout=60):
    log = out / "cells.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} cells after {timeout} s")


def assert_complete_without_duplicates(out, expected_cells):
    summary = read_summary(out)
    assert len(summary) == expected_cells
    assert not summary.duplicated(CELL_KEY).any()
    samples = pd.read_parquet(out / "samples.parquet")
    cell = ["backend", "dtype", "n"]
    per_cell = samples[kept_mask(samples, cell)].groupby(cell).size()
    for row in summary[summary["status"] == "ok"].itertuples():
        assert per_cell[(row.backend, row.dtype, row.n)] == row.samples


@pytest.fixture
def slow_config(tmp_path):
    return write_config(tmp_path, ["numpy", "tests.plugins.misbehaving:Good"],
                        timing={"budget_s": 0.15, "target_rel_ci": 1e-6}, **SLOW_SWEEP)


def test_kill_9_then_resume_finishes_with_every_cell_once(tmp_path, slow_config):
    out = tmp_path / "run"
    process = start_run(slow_config, out)
    wait_for_cells(out, 3)
    process.kill()  # SIGKILL: no cleanup of any kind runs
    process.wait(timeout=30)
    kept = finished_keys(out)
    assert len(kept) >= 3
    assert not (out / "summary.parquet").exists()  # the tables were never written...
    resumed = run_cli("run", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_complete_without_duplicates(out, 12)  # ... and the resume re-ran only the rest
    assert kept <= finished_keys(out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["state"] == "finished" and len(meta["resumed_utc"]) == 1


def test_interrupt_says_how_to_resume_and_resume_completes(tmp_path, slow_config):
    out = tmp_path / "run"
    process = start_run(slow_config, out)
    wait_for_cells(out, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"qkbench run --resume {out}" in stderr
    assert run_cli("run", "--resume", str(out), "--no-progress").returncode == 0
    assert_complete_without_duplicates(out, 12)


def test_resume_repairs_a_torn_line_and_drops_orphan_samples(tmp_path):
    config = write_config(tmp_path, ["numpy"], n=[16, 24])
    out = tmp_path / "run"
    assert run_cli("run", str(config), "--out", str(out), "--no-progress").returncode == 0
    cells = (out / "cells.jsonl").read_text().splitlines(keepends=True)
    samples = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    second_row = json.loads(cells[1])
    # As if killed while writing the second cell: its samples are there, its row is torn.
    (out / "cells.jsonl").write_text(cells[0] + cells[1][: len(cells[1]) // 2])
    assert any(CellKey.of(json.loads(s)) == CellKey.of(second_row) for s in samples)
    (out / "summary.parquet").unlink()
    result = run_cli("run", "--resume", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert_complete_without_duplicates(out, 2)


@pytest.mark.parametrize("extra, problem", [
    (["quick"], "give no config, --out nor --env"),
    (["--shard", "2/3"], "holds shard 1/1"),
])
def test_resume_refuses_conflicting_requests(tmp_path, capsys, extra, problem):
    config = write_config(tmp_path, ["numpy"])
    out = tmp_path / "run"
    assert qkbench(capsys, "run", str(config), "--out", str(out), "--no-progress")[0] == 0
    result = run_cli("run", "--resume", str(out), *extra)  # the refusal in a real process
    assert result.returncode == 2 and problem in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    result = run_cli("run", "--resume", str(tmp_path))
    assert result.returncode == 2 and "not a qkbench run directory" in result.stderr


def test_shards_partition_the_sweep_deterministically():
    config = config_module.load(REPO / "configs" / "default.yaml")
    labels = ["numpy", "numba", "torch-cpu"]
    everything = {c.key for c in expand(config, labels)}
    parts = [{c.key for c in expand(config, labels, Shard(i, 5))} for i in range(1, 6)]
    assert set().union(*parts) == everything
    assert sum(len(p) for p in parts) == len(everything)  # disjoint
    assert parts[2] == {c.key for c in expand(config, labels, Shard(3, 5))}
    assert all(len(p) % len(labels) == 0 for p in parts)  # whole interleaving groups


@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "3", "1/0"])
def test_bad_shard_is_a_usage_error(tmp_path, text):
    config = write_config(tmp_path, ["numpy"])
    result = run_cli("run", str(config), "--shard", text, "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "--shard" in result.stderr


def test_shards_merge_into_the_whole_sweep(tmp_path, capsys):
    config = write_config(tmp_path, ["numpy", "tests.plugins.misbehaving:Good"],
                          n=[16, 24, 32], dtype=["float32", "float64"])
    shards = []
    for index in (1, 2, 3):
        out = tmp_path / f"shard{index}"
        code, _, err = qkbench(capsys, "run", str(config), "--shard", f"{index}/3", "--out",
                               str(out), "--no-progress")
        assert code == 0, err
        shards.append(str(out))
    merged = tmp_path / "merged"
    code, _, err = qkbench(capsys, "merge", *shards, "--out", str(merged))
    assert code == 0, err
    assert_complete_without_duplicates(merged, 12)
    meta = json.loads((merged / "meta.json").read_text())
    assert meta["state"] == "finished" and len(meta["merged_from"]) == 3

    code, _, err = qkbench(capsys, "merge", shards[0], shards[0], "--out", str(tmp_path / "m2"))
    assert code == 2 and "must not overlap" in err
    code, _, err = qkbench(capsys, "merge", shards[0], shards[1], "--out", str(tmp_path / "m3"))
    assert code == 1 and "in no shard" in err


def test_merge_refuses_shards_of_different_configs(tmp_path, capsys):
    first = write_config(tmp_path, ["numpy"], n=[16])
    qkbench(capsys, "run", str(first), "--shard", "1/2", "--out", str(tmp_path / "a"),
            "--no-progress")
    other = tmp_path / "other"
    other.mkdir()
    second = write_config(other, ["numpy"], n=[24])
    qkbench(capsys, "run", str(second), "--shard", "2/2", "--out", str(tmp_path / "b"),
            "--no-progress")
    code, _, err = qkbench(capsys, "merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                           str(tmp_path / "m"))
    assert code == 2 and "another config" in err


def test_merge_refuses_a_shard_from_another_kind_of_machine(tmp_path, capsys):
    # Two hardware kinds cannot be had on one machine: the second shard's fingerprint is
    # edited as a node with another CPU would have written it (its keys recomputed the way
    # the fingerprint computes them).
    from qkbench.machine.environment import HARDWARE_FIELDS, SOFTWARE_FIELDS, digest

    config = write_config(tmp_path, ["numpy"], n=[16, 24])
    for index in (1, 2):
        code, _, err = qkbench(capsys, "run", str(config), "--shard", f"{index}/2", "--out",
                               str(tmp_path / f"s{index}"), "--no-progress")
        assert code == 0, err
    meta_path = tmp_path / "s2" / "meta.json"
    meta = json.loads(meta_path.read_text())
    environment = meta["environment"]
    environment["cpu"]["model"] = "Another CPU 9000"
    environment["hardware_key"] = digest(environment, HARDWARE_FIELDS)
    environment["comparability_key"] = digest(environment, HARDWARE_FIELDS + SOFTWARE_FIELDS)
    meta_path.write_text(json.dumps(meta))
    code, _, err = qkbench(capsys, "merge", str(tmp_path / "s1"), str(tmp_path / "s2"),
                           "--out", str(tmp_path / "m"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "another kind of machine" in err and "cpu.model" in err and "Another CPU 9000" in err
    assert not (tmp_path / "m").exists()


def test_merge_names_the_shards_it_lacks(tmp_path, capsys):
    config = write_config(tmp_path, ["numpy"], n=[16, 24, 32])
    code, _, err = qkbench(capsys, "run", str(config), "--shard", "2/3", "--out",
                           str(tmp_path / "s2"), "--no-progress")
    assert code == 0, err
    code, _, err = qkbench(capsys, "merge", str(tmp_path / "s2"), "--out", str(tmp_path / "m"))
    assert code == 1 and "2 cell(s) of the sweep are in no shard" in err
    assert "shard(s) absent or unfinished: 1, 3" in err
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["missing_shards"] == [1, 3]


def test_cells_that_cannot_fit_in_memory_are_skipped_with_the_reason(tmp_path):
    # S alone would be 2^20 × 2^20 float32 = 4 TiB: far beyond any machine running the tests.
    config = write_config(tmp_path, ["numpy"], n=[1 << 20], d_k=[1])
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    row = read_summary(out).iloc[0]
    assert row["status"] == "skipped" and "GiB of host memory" in row["reason"]
