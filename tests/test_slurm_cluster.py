"""`qkbench submit slurm` against a real one-node Slurm cluster (tests/slurm_cluster.py):
a sweep in 3 shards on each of two partitions, merged and reported, equal in cells to the
unsharded run; a shard cancelled mid-run, another requeued mid-run, and `--resume`.

Skipped, with the reason, where slurm-wlm and munge are not installed or not root."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from qkbench.plan import config as config_module
from qkbench.plan.sweep import expand
from qkbench.cell_key import CellKey
from qkbench.records.run import load_run
from tests.conftest import run_cli, write_config
from tests.slurm_cluster import Cluster, slurm_cluster_fixture

slurm_cluster = pytest.fixture(scope="session")(slurm_cluster_fixture)

TIMEOUT = 240  # seconds a whole sweep may take on a loaded 2-core machine


def job_ids(stdout: str) -> list[str]:
    found = re.search(r"follow with: squeue -j ([\d,]+)", stdout)
    assert found, stdout
    return found.group(1).split(",")


def submitted(stdout: str, what: str, folder: str) -> str:
    found = re.search(rf"^{folder}: {what}\b.* job (\d+)$", stdout, re.MULTILINE)
    assert found, stdout
    return found.group(1)


def wait_until(check, what: str, timeout: float = TIMEOUT, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(step)


def queued(cluster: Cluster) -> set[str]:
    return set(cluster.output("squeue", "--noheader", "--format=%F").split())


def wait_for_jobs(cluster: Cluster, ids: list[str]) -> None:
    wait_until(lambda: not (queued(cluster) & set(ids)), f"jobs {ids} to end")


def exit_code(cluster: Cluster, job_id: str) -> int:
    found = re.search(r"ExitCode=(\d+):", cluster.output("scontrol", "show", "job", job_id))
    assert found, job_id
    return int(found.group(1))


def cells(path: Path) -> int:
    text = (path / "cells.jsonl").read_text() if (path / "cells.jsonl").exists() else ""
    return len(text.splitlines())


def test_a_sweep_on_two_partitions_merges_to_the_unsharded_run(slurm_cluster, tmp_path):
    config = write_config(tmp_path, ["numpy"], n=[32, 48, 64], dtype=["float32", "float64"])
    out = tmp_path / "sweep"
    # Shared nodes here (the two partitions' tasks run side by side on the one node): this
    # test checks cells, not times; the other one runs with the default, --exclusive.
    result = run_cli("submit", "slurm", str(config), "--shards", "3", "--out", str(out),
                     "--partition", "alpha", "--partition", "beta", "--no-exclusive")
    assert result.returncode == 0, result.stderr
    ids = job_ids(result.stdout)
    # The unsharded run, while the jobs queue: cells and statuses are compared, not times.
    whole = run_cli("run", str(config), "--out", str(tmp_path / "whole"), "--no-progress")
    assert whole.returncode == 0, whole.stderr
    expected = {CellKey.of(row) for row in load_run(tmp_path / "whole").summary.to_dict("records")}
    wait_for_jobs(slurm_cluster, ids)
    for partition in ("alpha", "beta"):
        shards = submitted(result.stdout, "shards", partition)
        job = slurm_cluster.output("scontrol", "show", "job", shards)
        assert f"Partition={partition}" in job and "OverSubscribe=NO" not in job
        assert exit_code(slurm_cluster, submitted(result.stdout, "merge", partition)) == 0
        merged = load_run(out / partition / f"merged-{partition}")
        assert {CellKey.of(row) for row in merged.summary.to_dict("records")} == expected
        assert set(merged.summary["status"]) == {"ok"}
        assert merged.meta["state"] == "finished" and merged.meta["missing_cells"] == 0
        assert sorted(s["shard"]["index"] for s in merged.meta["merged_from"]) == [1, 2, 3]
    assert exit_code(slurm_cluster, submitted(result.stdout, "report", "all")) == 0
    report = (out / "report.md").read_text()
    assert "merged-alpha" in report and "merged-beta" in report


def test_a_cancelled_shard_is_resubmitted_and_a_requeued_one_resumes(slurm_cluster, tmp_path):
    # Six shapes, one group each, dealt round-robin: shard 1 holds n = 32 and 80, shard 2
    # 48 and 96, shard 3 64 and 112. The gated backend holds n = 80 and 96 until the gate
    # opens, so shards 1 and 2 are caught with one cell done and one under way.
    gate = tmp_path / "gate"
    env = {"QKBENCH_TEST_GATE": str(gate), "QKBENCH_TEST_GATE_N": "80,96"}
    config = write_config(tmp_path, ["tests.plugins.gated:Gated"],
                          n=[32, 48, 64, 80, 96, 112], timing={"timeout_s": 200})
    out = tmp_path / "sweep"
    result = run_cli("submit", "slurm", str(config), "--shards", "3", "--out", str(out),
                     "--max-parallel", "1", env=env)
    assert result.returncode == 0, result.stderr
    array, merge = submitted(result.stdout, "shards", "default"), \
        submitted(result.stdout, "merge", "default")
    shard = {index: out / "default" / f"shard-{index}" for index in (1, 2, 3)}
    assert "OverSubscribe=NO" in slurm_cluster.output("scontrol", "show", "job", array)

    # Tasks start in index order as a rule; the test does not rely on it.
    wait_until(lambda: cells(shard[1]) == 1 or cells(shard[2]) == 1, "a shard to hold")
    cancelled, requeued = (1, 2) if cells(shard[1]) == 1 else (2, 1)
    slurm_cluster.output("scancel", f"{array}_{cancelled}")
    wait_until(lambda: cells(shard[requeued]) == 1, f"shard {requeued} to hold")
    slurm_cluster.output("scontrol", "requeue", f"{array}_{requeued}")

    def resumed() -> bool:
        # A requeued task waits for a begin time of its own; the test does not.
        slurm_cluster.output("scontrol", "update", f"JobId={array}_{requeued}", "StartTime=now")
        return "resumed_utc" in json.loads((shard[requeued] / "meta.json").read_text())

    wait_until(resumed, f"the requeued shard {requeued} to resume", step=0.5)
    gate.touch()
    wait_for_jobs(slurm_cluster, [array, merge])

    assert json.loads((shard[cancelled] / "meta.json").read_text())["state"] == "interrupted"
    assert json.loads((shard[requeued] / "meta.json").read_text())["state"] == "finished"
    assert cells(shard[requeued]) == 2  # resumed: its first cell was kept, not measured again
    assert exit_code(slurm_cluster, merge) == 1
    log = "".join(p.read_text() for p in (out / "default" / "logs").glob("merge-*.log"))
    held = {1: 80, 2: 96}[cancelled]
    assert f"cell(s) of the sweep are in no shard: gated float32 n={held}" in log
    assert f"shard(s) absent or unfinished: {cancelled} (interrupted)" in log
    assert f"qkbench submit slurm --resume {out}" in log

    again = run_cli("submit", "slurm", "--resume", str(out), env=env)
    assert again.returncode == 0, again.stderr
    assert re.search(rf"^default: shards {cancelled} job \d+$", again.stdout, re.MULTILINE), \
        again.stdout
    wait_for_jobs(slurm_cluster, job_ids(again.stdout))
    assert exit_code(slurm_cluster, submitted(again.stdout, "merge", "default")) == 0
    merged = load_run(out / "default" / "merged-default")
    loaded = config_module.load(config)
    labels = [spec.label for spec in config_module.resolve_backends(loaded)]
    expected = {cell.key for cell in expand(loaded, labels)}
    assert {CellKey.of(row) for row in merged.summary.to_dict("records")} == expected
    assert set(merged.summary["status"]) == {"ok"} and merged.meta["state"] == "finished"
    nothing = run_cli("submit", "slurm", "--resume", str(out))
    assert nothing.returncode == 0 and "nothing to resubmit" in nothing.stdout
