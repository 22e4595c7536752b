"""A small git repository of a plugin backend, made for `qkbench find` (tests/test_find.py) and
the history it is bisected over (benchmarks/find_target.py): commit i changes one line, and
from the commit `slow_from` on the backend's scores() repeats its product `repeats` times.

Two layouts: `packaged=False` is a bare module on the import path (no pyproject.toml: find puts
the commit's files on the path, nothing to build), `packaged=True` an installable package whose
distribution registers the backend under the entry-point group (find pip-installs each commit).
A commit in `broken` does not build: a syntax error in the module, or with `packaged` a
pyproject.toml that is not TOML."""

from __future__ import annotations

import subprocess
from collections.abc import Collection
from pathlib import Path

MODULE = '''"""slowkernel at commit {number}: S = Q·Kᵀ, computed {repeats} time(s) per call."""

from qkbench import Backend

REPEATS = {repeats}
COMMIT = {number}


class Kernel(Backend):
    name = "slowkernel"
    dtypes = ("float32",)

    def scores(self, q, k):
        s = q @ k.T
        for _ in range(REPEATS - 1):  # the slowdown: the same product again
            s = q @ k.T
        return s
'''

PYPROJECT = '''[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "slowkernel"
version = "0.1.{number}"

[project.entry-points."qkbench.backends"]
slowkernel = "slowkernel:Kernel"

[tool.setuptools]
packages = ["slowkernel"]
'''

# A config whose sweep is one small cell of the plugin: each paired run takes a few seconds.
# target_rel_ci is tiny so that the cell samples for its whole budget (rounds for the paired
# verdict); the machine check is off because pairing already cancels what it guards against.
CONFIG = {"name": "find-test", "sweep": {"n": [128], "d_k": [32], "dtype": ["float32"],
                                         "threads": [1]},
          "backends": [{"name": "slowkernel:Kernel", "label": "kernel"}],
          "timing": {"budget_s": 0.3, "timeout_s": 60, "target_rel_ci": 0.001,
                     "min_samples": 12, "warmup_s": 0.0, "processes": 2,
                     "machine_check": False}}


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True,
                          text=True).stdout


def make_repo(folder: Path, commits: int = 16, slow_from: int = 11, repeats: int = 3,
              broken: Collection[int] = (), packaged: bool = False) -> list[str]:
    """The repository at `folder`; returns its commits' hashes, oldest first."""
    (folder / "slowkernel").mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "find-test@example.com")
    git(folder, "config", "user.name", "find test")
    git(folder, "config", "commit.gpgsign", "false")
    for number in range(commits):
        module = MODULE.format(number=number, repeats=repeats if number >= slow_from else 1)
        pyproject = PYPROJECT.format(number=number)
        if number in broken:
            if packaged:
                pyproject += "broken = [\n"
            else:
                module += "\ndef broken(:\n"
        (folder / "slowkernel" / "__init__.py").write_text(module)
        if packaged:
            (folder / "pyproject.toml").write_text(pyproject)
        git(folder, "add", "-A")
        message = f"commit {number}" + (": scores() repeats its product" if number == slow_from
                                        else "")
        git(folder, "commit", "-q", "-m", message)
    return git(folder, "rev-list", "--reverse", "HEAD").split()
