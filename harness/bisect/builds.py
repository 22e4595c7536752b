"""One environment per tested commit: a worktree of the commit, installed without its
dependencies into a virtual environment that also sees this interpreter's packages (or, where
the commit needs no build, its files put on the import path), checked, and cached by commit.

A commit's environment is `CACHE/<interpreter>/<commit>/`: `venv/` (made with
`--system-site-packages`, plus a `.pth` file that adds this interpreter's own site folders, so
the commit's code is the only thing it brings), `src/` for a commit with no pyproject.toml or
setup.py (nothing to build: its files are the import path), and `ready.json`, written last. A
folder without `ready.json` is a build that did not finish and is made again. The worktree is
gone as soon as the environment is built: a plain (not editable) install copies what it needs.

"Builds" means: installed, and the backend then loads in that environment from the commit's
own files, with a qkbench that speaks this one's worker protocol. A commit that fails any of it
raises `BuildFailed` with the reason in one line (find skips it, as `git bisect skip`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qkbench.bisect.git import GitError, worktree
from qkbench.measure.worker import PROTOCOL_VERSION

INSTALL_TIMEOUT_S = 600.0  # a build with compiled extensions takes minutes
CHECK_TIMEOUT_S = 180.0  # importing qkbench, NumPy and the backend: seconds
_MARK = "QKBENCH-FIND-CHECK "

# Run in the commit's environment: which file the backend's module is, and the protocol its
# qkbench speaks. The registry resolves the name there, as that environment's workers will.
_CHECK = r"""
import json, sys
try:
    import qkbench
    from qkbench.measure.worker import PROTOCOL_VERSION
    from qkbench.backends.registry import resolve
    spec = resolve(sys.argv[1])
    module = sys.modules[spec.path.partition(":")[0]]
    out = {"file": getattr(module, "__file__", None), "path": spec.path,
           "protocol": PROTOCOL_VERSION, "qkbench_file": qkbench.__file__}
except BaseException as exc:
    text = (str(exc).strip().splitlines() or [""])[0]
    out = {"error": type(exc).__name__ + (": " + text if text else "")}
sys.stdout.write("\n__MARK__" + json.dumps(out) + "\n")
""".replace("__MARK__", _MARK)


class BuildFailed(Exception):
    """A commit does not build (or its backend does not load); the message says why."""


@dataclass(frozen=True)
class CommitEnvironment:
    """A built environment of one commit."""

    commit: str
    folder: Path
    python: str  # the venv's interpreter, run as given
    paths: tuple[str, ...] = ()  # the commit's files, where it needed no build
    root: str = ""  # where its code is imported from (src/ or the venv's site folder)
    backend_file: str = ""
    cached: bool = False
    facts: Mapping[str, Any] = field(default_factory=dict)

    def entry(self, name: str, pythonpath: str) -> dict[str, Any]:
        """Its entry in a config's `environments`. PYTHONPATH is given outright, so that an
        entry of the caller's (its checkout of the same code, say) cannot shadow the commit's."""
        return {"name": name, "python": self.python, "env": {"PYTHONPATH": pythonpath},
                "paths": list(self.paths)}


def interpreter_key() -> str:
    """Environments see this interpreter's packages, so they are cached per interpreter."""
    return hashlib.sha256(f"{sys.prefix}|{sys.version}".encode()).hexdigest()[:12]


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qkbench" / "find"


def needs_build(tree: Path) -> bool:
    return any((tree / name).is_file() for name in ("pyproject.toml", "setup.py", "setup.cfg"))


def build(repo: Path, commit: str, cache: Path, backend: str, pythonpath: str | None
          ) -> CommitEnvironment:
    """The environment of `commit`, built (or found in the cache) and checked."""
    folder = cache / interpreter_key() / commit
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f"{commit}.lock"):
        ready = folder / "ready.json"
        if ready.is_file():
            try:
                facts = json.loads(ready.read_text(encoding="utf-8"))
                if facts.get("backend") == backend and facts.get("protocol") == PROTOCOL_VERSION:
                    return _environment(commit, folder, facts, cached=True)
            except (OSError, ValueError):
                pass
            ready.unlink(missing_ok=True)  # another backend: its check runs again
        if (folder / "venv").is_dir() and (folder / "built.json").is_file():
            facts = json.loads((folder / "built.json").read_text(encoding="utf-8"))
        else:
            shutil.rmtree(folder, ignore_errors=True)
            facts = _make(repo, commit, folder)
        environment = _environment(commit, folder, facts, cached=False)
        found = _check(environment, backend, pythonpath)
        facts = {**facts, **found, "backend": backend}
        ready.write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
        return _environment(commit, folder, facts, cached=False)


def _environment(commit: str, folder: Path, facts: Mapping[str, Any], cached: bool
                 ) -> CommitEnvironment:
    paths = (str(folder / "src"),) if facts.get("mode") == "path" else ()
    return CommitEnvironment(commit, folder, str(folder / "venv" / "bin" / "python"), paths,
                             str(facts.get("root", "")), str(facts.get("file", "")), cached,
                             dict(facts))


def _make(repo: Path, commit: str, folder: Path) -> dict[str, Any]:
    """Worktree → venv → install (or copy): what `built.json` records."""
    folder.mkdir(parents=True)
    venv = folder / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
         "the virtual environment could not be made", 120.0)
    python = str(venv / "bin" / "python")
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   "the virtual environment's python does not run", 60.0).strip()
    Path(purelib).mkdir(parents=True, exist_ok=True)
    # After the venv's own folder (its .pth files sort first), so the commit's code comes
    # first and this interpreter's packages (qkbench, its dependencies, pip) after it.
    lines = [f"import site; site.addsitedir({where!r})" for where in _own_site_folders()]
    (Path(purelib) / "qkbench_find_parent.pth").write_text("\n".join(lines) + "\n")
    scratch = folder / "tmp"  # pip's temporary folders: gone with the build, even a killed one
    scratch.mkdir()
    try:
        with worktree(repo, commit) as tree:
            if needs_build(tree):
                _run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                      "--no-index", "--ignore-installed", "--disable-pip-version-check", "-q",
                      str(tree)], "pip install failed", INSTALL_TIMEOUT_S, cwd=tree,
                     env={**os.environ, "TMPDIR": str(scratch)})
                facts = {"mode": "install", "root": purelib}
            else:
                shutil.copytree(tree, folder / "src", ignore=shutil.ignore_patterns(".git"))
                facts = {"mode": "path", "root": str(folder / "src")}
    except GitError as exc:
        raise BuildFailed(str(exc)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (folder / "built.json").write_text(json.dumps(facts) + "\n", encoding="utf-8")
    return facts


def _own_site_folders() -> list[str]:
    folders = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        folders.append(site.getusersitepackages())
    return list(dict.fromkeys(folders))


def _check(environment: CommitEnvironment, backend: str, pythonpath: str | None
           ) -> dict[str, Any]:
    """Does the backend load in the environment, from the commit's own files, with a qkbench
    of this worker protocol? Raises BuildFailed naming what does not."""
    variables = {**os.environ}
    parts = [*environment.paths, *([pythonpath] if pythonpath else [])]
    variables.pop("PYTHONPATH", None)
    if parts:
        variables["PYTHONPATH"] = os.pathsep.join(parts)
    out = _run([environment.python, "-c", _CHECK, backend], "the environment does not start",
               CHECK_TIMEOUT_S, env=variables)
    answers = [line[len(_MARK):] for line in out.splitlines() if line.startswith(_MARK)]
    if not answers:
        raise BuildFailed("the environment's python gave no answer")
    found: dict[str, Any] = json.loads(answers[-1])
    if "error" in found:
        raise BuildFailed(f"{backend} does not load: {found['error']}")
    if found.get("protocol") != PROTOCOL_VERSION:
        raise BuildFailed(f"its qkbench speaks worker protocol {found.get('protocol')}, this "
                          f"one {PROTOCOL_VERSION}")
    where = Path(str(found.get("file") or "")).resolve()
    if environment.folder.resolve() not in where.parents:
        raise BuildFailed(f"{backend} is not the commit's code: it loads from {where}")
    return found


def _run(command: list[str], failure: str, timeout: float, cwd: Path | None = None,
         env: Mapping[str, str] | None = None) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=cwd, env=None if env is None else dict(env), check=False)
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"{failure}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise BuildFailed(f"{failure}: {exc.strerror}") from None
    if done.returncode != 0:
        raise BuildFailed(f"{failure}: {_complaint(done.stderr + done.stdout, done.returncode)}")
    return done.stdout


def _complaint(output: str, code: int) -> str:
    """The line of a failed build that says what went wrong: the last exception, else the last
    error line (pip's own notes about where an error came from say nothing of it)."""
    lines = [line.strip(" ╰─>│") for line in output.splitlines()]
    lines = [line for line in lines if line and not line.lower().startswith(("note:", "hint:"))]
    for pattern in (r"^[\w.]*(Error|Exception)\b.*:", r"^(ERROR|error)\b"):
        found = [line for line in lines if re.match(pattern, line)]
        if found:
            return found[-1]
    return lines[-1] if lines else f"exit code {code}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two finds sharing a cache build one commit once; the second waits and reuses it."""
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
