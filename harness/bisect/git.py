"""`qkbench find`'s git: commits named and checked, the range between them, the working
tree's state, and a worktree of one commit that never outlives its use.

Every failure of a request (not a repository, an unknown commit, GOOD not an ancestor of BAD,
uncommitted changes) is a one-line `UsageError`: exit 2 before anything is built or measured.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qkbench.errors import UsageError

GIT_TIMEOUT_S = 120.0  # a worktree of a large repository takes seconds; minutes is stuck


class GitError(Exception):
    """A git command failed; its message is git's last line of complaint."""


def git(repo: Path, *args: str, timeout: float = GIT_TIMEOUT_S) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise UsageError("find needs git, and there is no `git` on PATH") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise GitError(last.strip())
    return done.stdout


def top_level(repo: Path) -> Path:
    """The top of the checkout `repo` is in, or UsageError."""
    if not repo.is_dir():
        raise UsageError(f"--repo {repo}: no such folder")
    try:
        return Path(git(repo, "rev-parse", "--show-toplevel").strip())
    except GitError:
        raise UsageError(f"{repo} is not a git repository (give its folder with --repo)"
                         ) from None


def resolve(repo: Path, revision: str) -> str:
    """A commit's full hash, from any name git understands (hash, tag, branch, HEAD~3)."""
    if not revision or revision.startswith("-"):
        raise UsageError(f"{revision!r} is not a commit")
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").strip()
    except GitError:
        raise UsageError(f"unknown commit {revision!r} in {repo}") from None


def require_clean(repo: Path) -> None:
    """Refuse a checkout with uncommitted changes to tracked files: what find reports must be
    a commit, and the working tree is the code this process and the user are looking at (the
    same rule as a run's `dirty`, untracked files aside)."""
    changed = git(repo, "status", "--porcelain", "--untracked-files=no").splitlines()
    if changed:
        first = changed[0][3:].strip()
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise UsageError(f"{repo} has uncommitted changes ({first}{more}): commit or stash "
                         "them first")


def first_parent_range(repo: Path, good: str, bad: str) -> list[str]:
    """The commits after GOOD up to BAD on BAD's first-parent line, oldest first (BAD last).

    First parents only: each commit of that line holds every change before it, so "slower
    from here on" is a property that flips once, which bisection needs; a slowdown merged from
    a branch is found at its merge (bisect the branch next)."""
    if good == bad:
        raise UsageError("GOOD and BAD are the same commit: give a good commit before the bad one")
    try:
        git(repo, "merge-base", "--is-ancestor", good, bad)
    except GitError:
        raise UsageError(f"GOOD {good[:12]} is not an ancestor of BAD {bad[:12]}: give a "
                         "good commit that BAD was built on") from None
    commits = git(repo, "rev-list", "--first-parent", "--reverse", f"{good}..{bad}").split()
    if not commits or commits[-1] != bad:
        raise UsageError(f"no commits between {good[:12]} and {bad[:12]} on BAD's first-parent "
                         "line")
    return commits


def subject(repo: Path, commit: str) -> str:
    """A commit's subject line, for the steps that name it."""
    try:
        return git(repo, "log", "-1", "--format=%s", commit).strip()
    except GitError:
        return ""


@contextmanager
def worktree(repo: Path, commit: str) -> Iterator[Path]:
    """A detached worktree of `commit` in a temporary folder, removed however the block ends
    (an error, Ctrl-C): `git worktree remove`, the folder deleted, and `git worktree prune`
    so that the repository keeps no record of it either."""
    holder = Path(tempfile.mkdtemp(prefix="qkbench-find-"))
    tree = holder / "tree"
    try:
        try:
            git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
        except GitError as exc:
            raise GitError(f"git worktree add failed: {exc}") from None
        yield tree
    finally:
        try:
            if tree.exists():
                git(repo, "worktree", "remove", "--force", str(tree))
        except (GitError, UsageError):
            pass  # the folder goes below; prune forgets it
        shutil.rmtree(holder, ignore_errors=True)
        prune(repo)


def prune(repo: Path) -> None:
    try:
        git(repo, "worktree", "prune")
    except (GitError, UsageError):
        pass
