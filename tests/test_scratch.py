"""Scratch files: a run's shared inputs live inside its run directory, so a run killed with
SIGKILL leaves nothing in the temp directory, and resuming it clears what it left."""

import os
import subprocess
import sys
import time

from qkbench.runner import SCRATCH_DIR

from tests.conftest import REPO, cli_env, run_cli, write_config


def test_a_run_killed_with_sigkill_leaves_nothing_in_the_temp_directory(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    config = write_config(tmp_path, ["numpy"], timing={"budget_s": 0.3, "target_rel_ci": 1e-6},
                          n=[16, 24, 32, 40, 48, 56, 64, 72])
    out = tmp_path / "run"
    env = {**cli_env(), "TMPDIR": str(temp)}  # where tempfile would put anything
    process = subprocess.Popen([sys.executable, "-m", "qkbench", "run", str(config), "--out",
                                str(out), "--no-progress", "--no-plots"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    log = out / "cells.jsonl"
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert time.monotonic() < deadline and process.poll() is None, "the run never got going"
        time.sleep(0.02)
    assert (out / SCRATCH_DIR).is_dir()  # the inputs the workers map, while it runs
    process.kill()  # SIGKILL: no finally, no atexit
    process.wait(timeout=30)
    time.sleep(0.5)  # its workers see the pipe close and exit
    assert os.listdir(temp) == []
    resumed = run_cli("run", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (out / SCRATCH_DIR).exists()  # the resumed run cleared the killed run's inputs
