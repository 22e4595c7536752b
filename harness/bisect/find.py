"""`qkbench find GOOD BAD`: the first commit between GOOD and BAD that made a cell slower.

The commits after GOOD up to BAD (BAD's first-parent line) are bisected. Each tested commit
gets its own environment (`qkbench.bisect.builds`: a worktree of it, installed into a virtual
environment cached by commit), and each decision is one paired run of the environments axis:
the cell in the tested commit's environment against the same cell in GOOD's, interleaved
round by round in one `qkbench run`, judged by `compare --between`'s rule
(`qkbench.analysis.paired.compare_between`). Whatever the machine does between steps (drift, a
neighbour starting a job) then falls on both sides of every decision. `slower` moves the bad
end, `same` or `faster` the good end; a commit that does not build, or whose cell fails, is
skipped (as `git bisect skip`).

Nothing is left behind in the repository: every worktree goes when its environment is built,
whatever happens (an error, Ctrl-C). The run directories of the steps stay in the output folder,
with `find.json`, which lists the steps and the answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qkbench.analysis.verdicts import CellResult, Rule
from qkbench.analysis.paired import PAIRED_THRESHOLD, compare_between
from qkbench.backends import registry
from qkbench.bisect import builds, git, search
from qkbench.bisect import sweep as find_sweep
from qkbench.errors import UsageError
from qkbench.records.run import META_FILE

GOOD_NAME, TESTED_NAME = "good", "tested"  # the two environments of every step's run
RUN_TIMEOUT_S = 3600.0  # one paired run of one cell: seconds to minutes
# A paired run whose sides ran but share too few rounds is made again (once): on a loaded
# machine one side's turns can run out of budget early, which says nothing about the commit.
ATTEMPTS = 2
EXIT_FOUND, EXIT_NOT_FOUND = 0, 1


class FindFailed(Exception):
    """The search cannot go on (GOOD's own cell failed, a run died); exit 1."""


@dataclass
class Step:
    """One tested commit: its decision, or why it was skipped."""

    number: int
    commit: str
    subject: str
    outcome: str  # slower / same / faster (the verdict), or skipped
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    note: str = ""
    run: str | None = None  # the step's run directory
    wall_s: float = 0.0
    paired_runs: int = 0  # runs made for this decision (a build failure costs none)


@dataclass
class FindResult:
    repo: str
    good: str
    bad: str
    cell: str
    commits: int
    expected_runs: int
    steps: list[Step] = field(default_factory=list)
    first_bad: str | None = None
    candidates: list[str] = field(default_factory=list)  # when skips leave several
    out: str = ""
    wall_s: float = 0.0
    state: str = "running"  # finished, failed (FindFailed), interrupted

    @property
    def runs(self) -> int:
        return sum(step.paired_runs for step in self.steps)

    @property
    def exit_code(self) -> int:
        return EXIT_FOUND if self.first_bad is not None else EXIT_NOT_FOUND

    def verdict(self) -> Step | None:
        return next((s for s in self.steps if s.commit == self.first_bad
                     and s.outcome == "slower"), None)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "runs": self.runs}


def find(good: str, bad: str, config: str | os.PathLike, backend: str, *,
         repo: str | os.PathLike = ".", cells: Mapping[str, Any] | None = None,
         threshold: float | None = None, out: str | os.PathLike | None = None,
         cache: str | os.PathLike | None = None,
         echo: Callable[[str], None] | None = None) -> FindResult:
    """Bisect GOOD..BAD of `repo` to the first commit where `backend`'s one cell of `config`
    (narrowed by `cells`) is slower than at GOOD; see the module's docstring."""
    say = echo or (lambda line: None)
    top = git.top_level(Path(repo))
    git.require_clean(top)
    good_commit, bad_commit = git.resolve(top, good), git.resolve(top, bad)
    commits = git.first_parent_range(top, good_commit, bad_commit)
    data, narrowed = find_sweep.narrowed(config, backend, dict(cells or {}))
    rule = Rule(threshold=PAIRED_THRESHOLD if threshold is None else threshold)
    folder = _fresh(Path(out) if out is not None else
                    Path(narrowed.output.dir) / f"find-{_stamp()}-{bad_commit[:12]}")
    name = find_sweep.entry_name(data)
    cache_root = Path(cache) if cache is not None else builds.default_cache()
    workers_path = _without(os.environ.get("PYTHONPATH"), top)
    started = time.monotonic()
    bisection = search.Bisection(len(commits))
    result = FindResult(str(top), good_commit, bad_commit, find_sweep.cell_text(narrowed, backend),
                        len(commits), bisection.expected_runs, out=str(folder))
    say(f"find: {len(commits)} commit(s) after {good_commit[:12]} (good) up to "
        f"{bad_commit[:12]} (bad); cell {result.cell}; about {bisection.expected_runs} paired "
        f"run(s); threshold {100 * rule.threshold:g}%; steps in {folder}")
    try:
        base = builds.build(top, good_commit, cache_root, name, workers_path)
    except builds.BuildFailed as exc:
        if not any(folder.iterdir()):
            folder.rmdir()  # nothing was measured: leave no empty folder behind
        raise UsageError(f"at GOOD {good_commit[:12]}: {exc}") from None
    orchestrator = _orchestrator_path(name, base)
    try:
        while (index := bisection.next()) is not None:
            commit = commits[index]
            step = Step(len(result.steps) + 1, commit, git.subject(top, commit), "skipped")
            say(f"step {step.number}: {commit[:12]} {_quoted(step.subject)} "
                f"({bisection.left} commit(s) left) …")
            begun = time.monotonic()
            try:
                tested = builds.build(top, commit, cache_root, name, workers_path)
            except builds.BuildFailed as exc:
                step.note = f"does not build: {exc}"
            else:
                while _decide(step, folder, data, base, tested, workers_path, orchestrator,
                              rule):
                    say("  too few rounds in common; the paired run is made again")
            step.wall_s = round(time.monotonic() - begun, 3)
            result.steps.append(step)
            bisection.record(index, {"slower": search.SLOWER, "skipped": search.SKIP}.get(
                step.outcome, search.NOT_SLOWER))
            say(f"  {_step_line(step)}")
        found = bisection.first_bad()
        result.first_bad = commits[found] if found is not None else None
        result.candidates = [commits[i] for i in bisection.candidates()]
        result.state = "finished"
    except KeyboardInterrupt:
        result.state = "interrupted"
        raise
    except BaseException:
        result.state = "failed"
        raise
    finally:
        result.wall_s = round(time.monotonic() - started, 3)
        _write_json(folder / "find.json", result)
    say(_answer(result, top))
    return result


def _decide(step: Step, folder: Path, data: dict[str, Any], base: builds.CommitEnvironment,
            tested: builds.CommitEnvironment, workers_path: str,
            orchestrator: str | None, rule: Rule) -> bool:
    """One paired run of the cell, GOOD's environment against the tested commit's; fills in
    the step. True when the run should be made again (both sides ran, too few rounds)."""
    name = f"step-{step.number:02d}-{step.commit[:12]}"
    if step.paired_runs:
        name += f"-{step.paired_runs + 1}"
    run_dir = folder / name
    config_file = find_sweep.write(data, folder / f"{name}.yaml",
                                   [base.entry(GOOD_NAME, workers_path),
                                    tested.entry(TESTED_NAME, workers_path)])
    code, last = _run(config_file, run_dir, folder / f"{name}.log", orchestrator)
    step.paired_runs += 1
    step.run = str(run_dir)
    if code == 2 or not (run_dir / META_FILE).is_file():
        if f"environment {TESTED_NAME}:" in last:  # the tested commit's qkbench refused
            step.note = f"cannot run: {last}"
            return False
        raise FindFailed(f"the paired run of step {step.number} failed: {last} "
                         f"(log: {folder / f'{name}.log'})")
    cell = _the_cell(compare_between(run_dir, GOOD_NAME, TESTED_NAME, rule))
    if cell.baseline_status and cell.baseline_status != "ok":
        raise FindFailed(f"the cell failed at GOOD in step {step.number} "
                         f"({cell.baseline_status}: {cell.note}); see {run_dir}")
    if cell.verdict == "not comparable":
        if cell.candidate_status == "ok":  # both sides ran, too few rounds: not the commit
            if step.paired_runs < ATTEMPTS:
                return True
            raise FindFailed(f"step {step.number} cannot decide: {cell.note} in "
                             f"{step.paired_runs} paired runs; give the cell more rounds (a "
                             "larger timing.budget_s, a smaller target_rel_ci)")
        step.note = f"the cell fails there: {cell.note}"
        return False
    step.outcome = cell.verdict
    step.ratio, step.ci_low, step.ci_high = cell.ratio, cell.ci_low, cell.ci_high
    step.note = cell.note
    return False


def _the_cell(comparison: Any) -> CellResult:
    paired = [cell for cell in comparison.cells if cell.verdict not in
              ("only in baseline", "only in candidate")]
    if len(paired) != 1:
        raise FindFailed(f"the paired run has {len(paired)} cells in both environments, not one")
    return paired[0]


def _run(config_file: Path, run_dir: Path, log: Path, orchestrator: str | None
         ) -> tuple[int, str]:
    """`qkbench run` of a step's config in a process of its own (this interpreter, this
    qkbench): a crash or a hang there is a failed step, not a dead search. Returns its exit
    code and the last line it wrote to stderr."""
    variables = dict(os.environ)
    if orchestrator is not None:
        before = variables.get("PYTHONPATH")
        variables["PYTHONPATH"] = os.pathsep.join([*([before] if before else []), orchestrator])
    command = [sys.executable, "-m", "qkbench", "run", str(config_file), "--out", str(run_dir),
               "--quiet", "--no-plots"]
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                   env=variables)
        try:
            code = process.wait(RUN_TIMEOUT_S)
        except BaseException:  # Ctrl-C, SIGTERM, the timeout: the run finishes its directory
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            raise
    if code == 130:
        raise KeyboardInterrupt
    lines = [line.strip() for line in log.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    return code, (lines[-1] if lines else f"exit code {code}").removeprefix("qkbench: error: ")


def _orchestrator_path(backend: str, base: builds.CommitEnvironment) -> str | None:
    """Where the run's main process finds the backend when this interpreter has not got it
    (a plugin repository that is not installed here): GOOD's copy. Its main process only
    validates the class; the timed code is each environment's own."""
    if backend in registry.BUILTINS:
        return None
    try:
        registry.resolve(backend)
    except UsageError:
        return base.root
    return None


def _without(pythonpath: str | None, top: Path) -> str:
    """PYTHONPATH without the entries inside the repository: the working tree's copy of the
    code must not shadow the commit's in its environment. Given to the workers outright (""
    when there is none), so they never inherit what the run's main process borrowed."""
    kept = [entry for entry in (pythonpath or "").split(os.pathsep)
            if entry and not _inside(Path(entry), top)]
    return os.pathsep.join(kept)


def _inside(path: Path, top: Path) -> bool:
    try:
        path = path.resolve()
    except OSError:
        return False
    return path == top.resolve() or top.resolve() in path.parents


def _fresh(folder: Path) -> Path:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"--out {folder} already exists and is not empty")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {folder}: {exc.strerror}") from None
    return folder


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _quoted(text: str, width: int = 60) -> str:
    return f'"{text if len(text) <= width else text[:width - 1] + "…"}"'


def _ratio(step: Step) -> str:
    if step.ratio is None:
        return ""
    return f"×{step.ratio:.3f} [{step.ci_low:.3f}, {step.ci_high:.3f}]"


def _step_line(step: Step) -> str:
    if step.outcome == "skipped":
        return f"skipped: {step.note}"
    # How many rounds, and whether it was inconclusive; the load notes are in find.json.
    kept = [part for part in step.note.split("; ")
            if part and not part.startswith(("baseline sampled", "candidate sampled"))]
    details = "; ".join([*kept, f"{step.wall_s:.1f} s"])
    return f"{step.outcome} {_ratio(step)} against GOOD ({details})"


def _answer(result: FindResult, top: Path) -> str:
    runs = f"{result.runs} paired run(s), {result.wall_s:.0f} s"
    if result.first_bad is not None:
        step = result.verdict()
        how = f"{step.outcome} {_ratio(step)}" if step else "slower"
        return (f"first slower commit: {result.first_bad[:12]} "
                f"{_quoted(git.subject(top, result.first_bad))}: {how} against "
                f"{result.good[:12]} ({runs})")
    if not result.candidates:
        return (f"no commit is slower: BAD {result.bad[:12]} is not slower than GOOD "
                f"{result.good[:12]} ({runs})")
    names = ", ".join(commit[:12] for commit in result.candidates)
    return (f"the first slower commit is one of {names} (commits that could not be tested "
            f"sit between them; {runs})")


def _write_json(path: Path, result: FindResult) -> None:
    try:
        path.write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n",
                        encoding="utf-8")
    except OSError:
        pass


def parse_cells(items: Sequence[str]) -> dict[str, Any]:
    return find_sweep.parse_cells(items)
