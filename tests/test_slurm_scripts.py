"""`qkbench submit slurm` without a cluster: the scripts it writes, the requests it refuses,
and the environment check every task makes (run with bash, as Slurm would run it)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path, PurePosixPath

from hypothesis import given, settings
from hypothesis import strategies as st

from qkbench.cluster.slurm import plan_sweep, scripts_of
from qkbench.cluster.slurm_scripts import array_range, shard_script
from qkbench.plan import config as config_module
from tests.conftest import run_cli, write_config


def sweep(tmp_path: Path) -> Path:
    return write_config(tmp_path, ["numpy"], n=[32, 48, 64], dtype=["float32", "float64"])


def directives(text: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in text.splitlines()
            if line.startswith("#SBATCH ")]


def test_dry_run_prints_every_script_and_submits_nothing(tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("submit", "slurm", str(sweep(tmp_path)), "--shards", "3", "--out", str(out),
                     "--partition", "a100", "--partition", "h100", "--sbatch-arg=--time=20",
                     "--shard-sbatch-arg=--gpus=1", "--max-parallel", "2", "--dry-run")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for partition in ("a100", "h100"):
        assert f"# ---- {out}/{partition}/shard.sbatch" in text
        assert f"# ---- {out}/{partition}/merge.sbatch" in text
        assert f"--out {out}/{partition}/merged-{partition}" in text
    assert f"# ---- {out}/report.sbatch" in text
    commands = [line for line in text.splitlines() if line.startswith("sbatch ")]
    assert commands == [
        f"sbatch --parsable {out}/a100/shard.sbatch",
        f"sbatch --parsable --dependency=afterany:<shards a100> {out}/a100/merge.sbatch",
        f"sbatch --parsable {out}/h100/shard.sbatch",
        f"sbatch --parsable --dependency=afterany:<shards h100> {out}/h100/merge.sbatch",
        f"sbatch --parsable --dependency=afterany:<merge a100>:<merge h100> {out}/report.sbatch"]
    assert not out.exists()


def test_shards_take_their_nodes_whole_unless_told_otherwise(tmp_path):
    config = config_module.load(sweep(tmp_path))
    plan = plan_sweep(config, tmp_path / "out", 3, partitions=["cpu"],
                      sbatch_args=["--account=proj"], shard_sbatch_args=["--gpus=1"])
    scripts = scripts_of(plan)
    shard, merge = directives(scripts["cpu/shard.sbatch"]), directives(scripts["cpu/merge.sbatch"])
    assert {"--exclusive", "--array=1-3", "--requeue", "--partition=cpu", "--account=proj",
            "--gpus=1", "--open-mode=append"} <= set(shard)
    assert "--account=proj" in merge and "--gpus=1" not in merge and "--exclusive" not in merge
    assert "report.sbatch" not in scripts  # one partition: its merged run is the result
    shared = directives(shard_script(replace(plan, exclusive=False, max_parallel=1), "cpu"))
    assert "--exclusive" not in shared and "--array=1-3%1" in shared
    default = scripts_of(replace(plan, partitions=()))
    assert not any(d.startswith("--partition") for d in directives(default["default/shard.sbatch"]))


@given(st.sets(st.integers(1, 2000), min_size=1, max_size=40), st.none() | st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_array_range_names_exactly_the_shards(indices, throttle):
    text = array_range(sorted(indices), throttle)
    body, _, limit = text.partition("%")
    assert limit == ("" if throttle is None else str(throttle))
    named = set()
    for part in body.split(","):
        low, _, high = part.partition("-")
        named |= set(range(int(low), int(high or low) + 1))
    assert named == indices


def test_bad_requests_are_one_line_and_exit_2(tmp_path):
    config = str(sweep(tmp_path))
    out = str(tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases = {
        ("--shards", "7", "--out", out): "only 6 interleaving group(s)",
        ("--shards", "0", "--out", out): "at least 1",
        ("--shards", "2", "--out", out, "--partition", "a/b"): "partition name",
        ("--shards", "2", "--out", out, "--partition", "a", "--partition", "a"): "once",
        ("--shards", "2", "--out", out, "--sbatch-arg", "time=5"): "one sbatch option",
        ("--shards", "2", "--out", out, "--max-parallel", "0"): "--max-parallel",
        ("--shards", "2", "--out", str(tmp_path / "full")): "not empty",
        ("--shards", "2", "--out", str(tmp_path / "with space")): "spaces",
        ("--out", out): "needs CONFIG, --out DIR and --shards N",
    }
    for args, words in cases.items():
        result = run_cli("submit", "slurm", config, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
            args, result.stderr)
    for args, words in {("--resume", out, config): "drop CONFIG",
                        ("--resume", str(tmp_path)): "no readable submission.json"}.items():
        result = run_cli("submit", "slurm", *args)
        assert result.returncode == 2 and words in result.stderr, (args, result.stderr)


def test_without_sbatch_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "bin").mkdir()
    bare = {"PATH": str(tmp_path / "bin")}  # no Slurm commands there
    result = run_cli("submit", "slurm", str(sweep(tmp_path)), "--shards", "2", "--out",
                     str(out), env=bare)
    assert result.returncode == 2 and "sbatch not found" in result.stderr, result.stderr
    assert not out.exists()


def run_task(script: str, folder: Path) -> subprocess.CompletedProcess:
    path = folder / "shard.sbatch"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"},
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_task_refuses_a_node_with_another_qkbench_or_no_interpreter(tmp_path):
    plan = plan_sweep(config_module.load(sweep(tmp_path)), tmp_path / "out", 2)
    assert plan.environment.startswith("Python 3.") and ", code " in plan.environment
    other = plan.environment.replace("qkbench ", "qkbench 0.0.1+")
    edited = plan.environment[:-1] + ("0" if plan.environment[-1] != "0" else "1")
    for changed, words in ((replace(plan, environment=other), "submit ran"),
                           (replace(plan, environment=edited), "submit ran"),
                           (replace(plan, python="/nowhere/bin/python3"), "has no")):
        result = run_task(shard_script(changed, "default"), tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("qkbench: error:") and words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_plan_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_sweep(config_module.load(sweep(tmp_path)), "rel/out", 2)
    assert plan.out == PurePosixPath(tmp_path / "rel" / "out") and plan.workdir == str(tmp_path)


def test_the_python_api_dry_run_returns_the_scripts_and_commands(tmp_path):
    import qkbench

    config = {"name": "api-sweep", "sweep": {"n": [32, 48], "d_k": [16], "dtype": ["float32"]},
              "backends": ["numpy"], "timing": {"budget_s": 0.05}}
    submission = qkbench.submit_slurm(config, tmp_path / "out", shards=2, partitions=["cpu"],
                                      max_parallel=1, dry_run=True)
    assert sorted(submission.scripts) == ["cpu/merge.sbatch", "cpu/shard.sbatch"]
    assert "--job-name=qkbench-api-sweep-cpu" in directives(submission.scripts["cpu/shard.sbatch"])
    assert [(job.what, job.folder, job.job_id) for job in submission.jobs] == [
        ("shards", "cpu", None), ("merge", "cpu", None)]
    assert submission.merged_runs == {"cpu": tmp_path / "out" / "cpu" / "merged-cpu"}
    assert not (tmp_path / "out").exists()
    try:
        qkbench.resume_slurm(tmp_path)
    except qkbench.UsageError as exc:
        assert "no readable submission.json" in str(exc)
    else:
        raise AssertionError("resume_slurm of a folder without a submission did not refuse")
