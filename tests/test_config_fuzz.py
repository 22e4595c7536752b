"""Config fuzzing: generated files, valid and invalid (tests/fuzzed_configs.py), through
`qkbench validate`, `qkbench run` and the API's `load_config`. Each must end in exit 0, or exit 2
with exactly one line on stderr naming the problem: never a traceback, never a hang.

In this process, through the CLI's `main` (a traceback is an exception out of it; a hang is
the per-config time limit, a SIGALRM), so the profile's examples take seconds. A sample of the
same files also goes through real `python -m qkbench` processes (tests/forked_cli.py), where a
stray line on stderr shows as it would to a user. benchmarks/config_fuzz.py runs 2,000.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import qkbench
from qkbench import cli
from qkbench.errors import UsageError
from tests.conftest import REPO, cli_env
from tests.forked_cli import run_many
from tests.fuzzed_configs import config_files, draw_files

PREFIX = "qkbench: error: "
# Far above what validating a config takes (milliseconds): only a config that never finishes
# reaches it, on any machine.
HANG_S = 30.0


class Hang(Exception):
    """A command ran past HANG_S."""


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def time_limit(seconds: float):
    def expired(signum, frame):
        raise Hang(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def in_process(*args: str) -> Outcome:
    """`qkbench ARGS` through the CLI's main, in this process. An exception other than
    SystemExit (argparse's exit) is what a user would see as a traceback: it propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), time_limit(HANG_S):
        try:
            code = cli.main(list(args))
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_contract(outcome: Outcome, command: str, data: bytes) -> None:
    """Exit 0 and nothing on stderr, or exit 2 and one line that starts with the prefix."""
    shown = f"qkbench {command} on {data[:400]!r}\nstdout: {outcome.stdout[-800:]}\n" \
            f"stderr: {outcome.stderr[-2000:]}"
    assert "Traceback" not in outcome.stderr, shown
    assert "pwned" not in outcome.stdout, shown  # a YAML tag that runs a command never ran
    assert outcome.code in (0, 2), shown
    if outcome.code == 2:
        assert outcome.stderr.count("\n") == 1 and outcome.stderr.startswith(PREFIX), shown
    else:
        assert outcome.stderr == "", shown


class Files:
    """A fresh file name per example, in one folder for the module."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.numbers = folder, itertools.count()

    def write(self, data: bytes) -> Path:
        path = self.folder / f"fuzzed-{next(self.numbers)}.yaml"
        path.write_bytes(data)
        return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    return Files(tmp_path_factory.mktemp("fuzz"))


@given(data=config_files())
def test_validate_run_and_load_config_exit_0_or_2_in_one_line(files, data):
    path = files.write(data)
    validated = in_process("validate", str(path))
    assert_contract(validated, "validate", data)
    event("valid" if validated.code == 0 else "refused")
    try:
        qkbench.load_config(path)
        loaded = True
    except UsageError as exc:
        assert "\n" not in str(exc) or validated.code == 2, str(exc)
        loaded = False
    if validated.code == 0:
        assert loaded, f"validate accepted what load_config refused: {data[:400]!r}"
        assert "valid" in validated.stdout
        return  # a valid config's run is a sweep, not a check of the config path
    out = path.with_suffix(".run")
    ran = in_process("run", str(path), "--out", str(out), "--quiet", "--no-plots")
    assert_contract(ran, "run", data)
    assert ran.code == 2, f"validate refused what run took: {validated.stderr}"
    assert not (out / "summary.parquet").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_real_processes_keep_the_contract_on_a_sample(tmp_path, command):
    sample = draw_files(40)
    paths = []
    for index, data in enumerate(sample):
        path = tmp_path / f"{index}.yaml"
        path.write_bytes(data)
        paths.append(path)
    args = [["validate", str(p)] if command == "validate" else
            ["run", str(p), "--out", str(p.with_suffix(".run")), "--quiet", "--no-plots"]
            for p in paths]
    if command == "run":  # only those validate refuses: a valid config's run is a sweep
        refused = [in_process("validate", str(p)).code == 2 for p in paths]
        args = [a for a, r in zip(args, refused) if r]
        sample = [d for d, r in zip(sample, refused) if r]
    results = run_many(args, tmp_path / "forked", cwd=REPO, env=cli_env(), timeout_s=HANG_S)
    for (code, stdout, stderr), data in zip(results, sample):
        assert code >= 0, f"killed (signal {-code}: a hang) on {data[:400]!r}"
        assert_contract(Outcome(code, stdout, stderr), command, data)


# A config can validate and still break a run, in a value only the run uses (a time limit past
# what the OS can wait for, a NUL in output.dir, counts past the int64 columns: each was found
# so). A few valid files of the sample, small ones, run end to end: exit 0 or 1 (a failed
# cell), never a traceback. benchmarks/config_fuzz.py --run-valid runs more.
VALID_RUNS = 3
SMALL_CELLS = 8


@pytest.mark.slow
def test_small_valid_configs_of_the_sample_run_without_a_traceback(tmp_path):
    chosen = []
    for index, data in enumerate(draw_files(60)):
        path = tmp_path / f"{index}.yaml"
        path.write_bytes(data)
        validated = in_process("validate", str(path))
        cells = re.search(r"valid — (\d+) cells", validated.stdout)
        if cells and int(cells[1]) <= SMALL_CELLS:
            chosen.append((path, data))
        if len(chosen) == VALID_RUNS:
            break
    assert chosen, "the sample has no small valid config"
    for path, data in chosen:
        cwd = path.with_suffix(".cwd")  # without --out a run writes under output.dir
        cwd.mkdir()
        ((code, stdout, stderr),) = run_many([["run", str(path), "--quiet", "--no-plots"]],
                                             tmp_path / "forked", cwd=cwd, env=cli_env(),
                                             timeout_s=600)
        shown = f"{data[:400]!r}\nstderr: {stderr[-2000:]}"
        assert code in (0, 1) and "Traceback" not in stderr, shown
