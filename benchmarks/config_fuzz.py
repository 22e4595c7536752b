"""Config fuzzing at scale: thousands of generated config files through the real CLI.

The files come from tests/fuzzed_configs.py (valid configs, wrong values at random key paths,
then YAML mangled: duplicate keys, alias bombs, tags, deep nesting, cut files, bytes that are
not UTF-8, files past the size cap). Each goes through `qkbench validate` in a process of its
own (tests/forked_cli.py: forked from one server, so each costs milliseconds, not an
interpreter's start-up), killed at --timeout-s; each one `validate` refuses also through
`qkbench run`; and each through the API's `qkbench.load_config` in this process. Counted:

* **tracebacks** — "Traceback" on stderr, or an exception other than UsageError from the API;
* **hangs** — a command killed at the time limit (the API: a SIGALRM at the same limit);
* **not one line** — exit 2 whose stderr is not exactly one `qkbench: error: ...` line, or
  exit 0 with anything on stderr;
* **other exit codes** — anything but 0 and 2;
* **disagreements** — `run` taking a config `validate` refused, or the API refusing one
  `validate` accepted.

With --run-valid K, the first K configs `validate` accepts with at most --max-cells cells also
go through a whole `qkbench run` (each a sweep of seconds): it must finish with exit 0 or 1
(a cell that failed), never a traceback or a hang. A config can pass validation and still
break a run (a value only the run uses: a time limit the OS cannot wait for, a path).

    python benchmarks/config_fuzz.py                 # 2,000 configs, seed 0
    python benchmarks/config_fuzz.py --count 10000 --seed 7 --keep results/fuzz
    python benchmarks/config_fuzz.py --run-valid 40     # and 40 valid ones run end to end

Exits 1 when anything was counted (the files that caused it are kept, with --keep or in a
temporary folder that is then not removed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import qkbench  # noqa: E402
from qkbench.errors import UsageError  # noqa: E402
from tests.conftest import cli_env  # noqa: E402
from tests.forked_cli import run_many  # noqa: E402
from tests.fuzzed_configs import draw_files  # noqa: E402

PREFIX = "qkbench: error: "
CELLS = re.compile(r"valid — (\d+) cells")


def judge(code: int, stdout: str, stderr: str) -> str | None:
    """What is wrong with one command's outcome, or None."""
    if code < 0:
        return "hang"
    if "Traceback" in stderr:
        return "traceback"
    if code not in (0, 2):
        return "other exit code"
    if code == 2 and not (stderr.count("\n") == 1 and stderr.startswith(PREFIX)):
        return "not one line"
    if code == 0 and stderr:
        return "not one line"
    return None


class Expired(Exception):
    pass


def through_api(path: Path, timeout_s: float) -> tuple[str, str | None]:
    """('valid' | 'refused', a problem or None) of `qkbench.load_config(path)`."""
    def expired(signum, frame):
        raise Expired

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        qkbench.load_config(path)
        return "valid", None
    except UsageError:
        return "refused", None
    except Expired:
        return "hang", "hang"
    except Exception as exc:  # what a user of the API would see as a traceback
        return "error", f"traceback ({type(exc).__name__})"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="a command still running after this is a hang")
    parser.add_argument("--keep", type=Path, help="keep the generated files here")
    parser.add_argument("--run-valid", type=int, default=0, metavar="K",
                        help="also run K of the valid configs end to end")
    parser.add_argument("--max-cells", type=int, default=8,
                        help="the largest valid config (in cells) --run-valid runs")
    parser.add_argument("--run-timeout-s", type=float, default=600.0,
                        help="a run of a valid config still going after this is a hang")
    args = parser.parse_args()

    started = time.monotonic()
    files = draw_files(args.count, args.seed)
    generated_s = time.monotonic() - started
    folder = (args.keep or Path(tempfile.mkdtemp(prefix="qkbench-fuzz-"))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, data in enumerate(files):
        path = folder / f"{index:05d}.yaml"
        path.write_bytes(data)
        paths.append(path)

    env = cli_env()
    started = time.monotonic()
    validated = run_many([["validate", str(p)] for p in paths], folder / "validate", REPO, env,
                         timeout_s=args.timeout_s)
    refused = [p for p, (code, _, _) in zip(paths, validated) if code == 2]
    ran = run_many([["run", str(p), "--out", str(p.with_suffix(".run")), "--quiet",
                     "--no-plots"] for p in refused], folder / "run", REPO, env,
                   timeout_s=args.timeout_s)
    cli_s = time.monotonic() - started
    small = [p for p, (code, stdout, _) in zip(paths, validated)
             if code == 0 and (cells := CELLS.search(stdout)) and int(cells[1]) <= args.max_cells]
    whole = small[:args.run_valid]
    started = time.monotonic()
    # Each in a folder of its own as cwd: without --out a run writes under output.dir.
    for path in whole:
        path.with_suffix(".cwd").mkdir(exist_ok=True)
    whole_runs = [run_many([["run", str(p), "--quiet", "--no-plots"]], folder / "whole",
                           p.with_suffix(".cwd"), env, timeout_s=args.run_timeout_s)[0]
                  for p in whole]
    whole_s = time.monotonic() - started

    problems: Counter[str] = Counter()
    examples: dict[str, Path] = {}

    def count(problem: str | None, path: Path, command: str) -> None:
        if problem:
            problems[f"{command}: {problem}"] += 1
            examples.setdefault(f"{command}: {problem}", path)

    for path, outcome in zip(paths, validated):
        count(judge(*outcome), path, "validate")
    for path, outcome in zip(refused, ran):
        count(judge(*outcome), path, "run")
        if outcome[0] != 2 and outcome[0] >= 0:
            count("took a config validate refused", path, "run")
    for path, (code, stdout, stderr) in zip(whole, whole_runs):
        problem = "hang" if code < 0 else "traceback" if "Traceback" in stderr else \
            None if code in (0, 1) else "other exit code"
        count(problem, path, "run (valid)")
    started = time.monotonic()
    api = Counter()
    for path, (code, _, _) in zip(paths, validated):
        verdict, problem = through_api(path, args.timeout_s)
        api[verdict] += 1
        count(problem, path, "load_config")
        if code == 0 and verdict == "refused":
            count("refused a config validate accepted", path, "load_config")
    api_s = time.monotonic() - started

    codes = Counter(code for code, _, _ in validated)
    tracebacks = sum(n for key, n in problems.items() if "traceback" in key)
    hangs = sum(n for key, n in problems.items() if "hang" in key)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} "
          f"CPUs; seed {args.seed}")
    print(f"{len(files)} configs generated in {generated_s:.1f} s: validate exit 0: "
          f"{codes.get(0, 0)}, exit 2: {codes.get(2, 0)}, other: "
          f"{sum(n for c, n in codes.items() if c not in (0, 2))}")
    print(f"commands: {len(validated)} validate + {len(ran)} run in {cli_s:.1f} s; "
          f"load_config: {dict(api)} in {api_s:.1f} s")
    if args.run_valid:
        print(f"valid configs run end to end: {len(whole)} (of {len(small)} with at most "
              f"{args.max_cells} cells) in {whole_s:.1f} s: exit codes "
              f"{dict(Counter(code for code, _, _ in whole_runs))}")
    print(f"tracebacks: {tracebacks}   hangs: {hangs}   all problems: {sum(problems.values())}")
    for key, n in sorted(problems.items()):
        print(f"  {key}: {n} (for example {examples[key]})")
    if problems:
        print(f"files kept in {folder}")
        return 1
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
