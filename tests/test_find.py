"""`qkbench find GOOD BAD` as a person would use it: real git repositories made here (a plugin
backend whose scores() repeats its product from a known commit on, tests/find_repo.py), real
virtual environments, real paired runs. Each decision is one paired run, so the count of runs
is checked, and so is what must never happen: a worktree left behind, a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from tests.conftest import REPO, cli_env, interruptible, run_cli
from tests.find_repo import CONFIG, git, make_repo

from qkbench.bisect import builds


def _config(folder, **changes):
    path = folder / "find.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    return path


def _find(tmp_path, repo, good, bad, *extra, backend="kernel", config=None, timeout=600):
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return run_cli("find", good, bad, "--repo", str(repo), "--backend", backend,
                   "--config", str(config or _config(tmp_path)),
                   "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), *extra,
                   env={"TMPDIR": str(tmp_path / "tmp")}, timeout=timeout)


def _nothing_left(tmp_path, repo):
    """No worktree registered in the repository, none in the temporary folder."""
    listed = git(repo, "worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 1, listed
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.slow
def test_find_returns_the_commit_that_made_the_cell_slower(tmp_path):
    commits = make_repo(tmp_path / "repo", commits=16, slow_from=11)
    result = _find(tmp_path, tmp_path / "repo", commits[0], "main")
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads((tmp_path / "out" / "find.json").read_text())
    assert found["first_bad"] == commits[11], result.stdout
    assert found["commits"] == 15 and found["runs"] <= 5, result.stdout
    assert f"first slower commit: {commits[11][:12]}" in result.stdout
    steps = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert len(steps) == len(found["steps"])  # printed as it went, one line per step
    verdict = next(s for s in found["steps"] if s["commit"] == commits[11])
    assert verdict["outcome"] == "slower" and verdict["ci_low"] > 1.07
    _nothing_left(tmp_path, tmp_path / "repo")
    # Each tested commit's environment is cached by commit: a rerun builds none again.
    for step in found["steps"]:
        again = builds.build(tmp_path / "repo", step["commit"], tmp_path / "cache",
                             "slowkernel:Kernel", None)
        assert again.cached and (again.folder / "ready.json").is_file()


@pytest.mark.slow
def test_an_installed_plugin_whose_commit_does_not_build_is_skipped(tmp_path):
    # A package with an entry point, pip-installed per commit; commit 3's pyproject.toml is
    # broken, and it is the first commit the search asks for.
    commits = make_repo(tmp_path / "repo", commits=7, slow_from=5, broken={3}, packaged=True)
    config = _config(tmp_path, backends=["slowkernel"])
    result = _find(tmp_path, tmp_path / "repo", commits[0], commits[-1], backend="slowkernel",
                   config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads((tmp_path / "out" / "find.json").read_text())
    assert found["first_bad"] == commits[5], result.stdout
    skipped = [s for s in found["steps"] if s["outcome"] == "skipped"]
    assert [s["commit"] for s in skipped] == [commits[3]] and not skipped[0]["paired_runs"]
    assert "skipped: does not build: pip install failed" in result.stdout
    _nothing_left(tmp_path, tmp_path / "repo")


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("find") / "repo"
    return folder, make_repo(folder, commits=4, slow_from=2)


def _one_line_error(result, *words):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qkbench: error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], lines[0]


def test_a_dirty_working_tree_is_refused(tmp_path):
    commits = make_repo(tmp_path / "repo", commits=2)
    (tmp_path / "repo" / "slowkernel" / "__init__.py").write_text("# changed\n")
    _one_line_error(_find(tmp_path, tmp_path / "repo", commits[0], commits[1]),
                    "uncommitted changes")
    _nothing_left(tmp_path, tmp_path / "repo")


@pytest.mark.parametrize("case", ["not a repository", "unknown commit", "not an ancestor",
                                  "same commit", "unknown backend", "several cells",
                                  "unknown axis"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, small_repo, case):
    repo, commits = small_repo
    good, bad, extra, backend, config = commits[0], commits[-1], [], "kernel", None
    if case == "not a repository":
        (tmp_path / "plain").mkdir()
        repo, words = tmp_path / "plain", ["is not a git repository"]
    elif case == "unknown commit":
        good, words = "no-such-commit", ["unknown commit 'no-such-commit'"]
    elif case == "not an ancestor":
        good, bad, words = commits[-1], commits[0], ["is not an ancestor of BAD"]
    elif case == "same commit":
        bad, words = good, ["the same commit"]
    elif case == "unknown backend":
        backend, words = "no-such-backend", ["at GOOD", "unknown backend 'no-such-backend'"]
    elif case == "several cells":
        config = _config(tmp_path, sweep={**CONFIG["sweep"], "n": [64, 128]})
        words = ["--cell n=64"]
    else:
        extra, words = ["--cell", "size=64"], ["'size' is not an axis"]
    result = _find(tmp_path, repo, good, bad, *extra, backend=backend, config=config)
    _one_line_error(result, *words)
    if case != "not a repository":
        _nothing_left(tmp_path, repo)


def test_ctrl_c_while_a_commit_builds_leaves_no_worktree(tmp_path):
    commits = make_repo(tmp_path / "repo", commits=3, packaged=True)
    # GOOD's build hangs (its setup.py sleeps): Ctrl-C arrives while its worktree exists.
    (tmp_path / "repo" / "setup.py").write_text(
        "import time\ntime.sleep(120)\nfrom setuptools import setup\nsetup()\n")
    git(tmp_path / "repo", "add", "setup.py")
    git(tmp_path / "repo", "commit", "-q", "-m", "a slow build")
    good = git(tmp_path / "repo", "rev-parse", "HEAD").strip()
    git(tmp_path / "repo", "commit", "-q", "--allow-empty", "-m", "after")
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "qkbench", "find", good, "HEAD", "--repo", str(tmp_path / "repo"),
         "--backend", "slowkernel", "--config", str(_config(tmp_path, backends=["slowkernel"])),
         "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")],
        cwd=REPO, env=cli_env(extra_env={"TMPDIR": str(tmp_path / "tmp")}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if git(tmp_path / "repo", "worktree", "list", "--porcelain").count("worktree ") > 1:
            break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the worktree never appeared: " + process.communicate()[1])
    time.sleep(1.0)  # pip is building in it
    os.kill(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "Traceback" not in err
    _nothing_left(tmp_path, tmp_path / "repo")
    assert commits  # the repository's first commits stay as they were


def test_the_api_refuses_what_the_command_refuses(tmp_path, small_repo):
    import qkbench

    repo, commits = small_repo
    with pytest.raises(qkbench.UsageError, match="is not an ancestor of BAD"):
        qkbench.find(commits[-1], commits[0], config=_config(tmp_path), backend="kernel",
                     repo=repo, cache=tmp_path / "cache", out=tmp_path / "out")
