"""Many `python -m qkbench ...` commands, each a process of its own, without paying an
interpreter's start-up for each.

A command of the CLI costs about 0.6 s of CPU before it reads its arguments (the interpreter,
pydantic, NumPy), and a test that checks a hundred bad configs through the real CLI spends
almost all of its time there. Here one server process imports what `python -m qkbench` imports
first (`qkbench.cli`, as harness/__main__.py does) and then forks once per command. Each child
is a real process with its own stdout, stderr and exit status: it runs the `qkbench` package's
`__main__` module through runpy with its own sys.argv, ends the way the interpreter ends a
script (SystemExit's code; a traceback on stderr and status 1 for any other exception; the atexit
handlers), and leaves through os._exit with that status. A traceback, a warning or a stray line
reaches its stderr or stdout just as it would from `python -m qkbench`.

tests/test_bad_input.py checks that a sample of commands gives byte-for-byte the same outcome
here as through a fresh `python -m qkbench`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# The server: reads [[args, stdout_path, stderr_path], ...] as JSON on stdin, runs up to
# `parallel` children at a time, and prints their exit statuses as JSON.
_SERVER = r"""
import atexit, json, os, runpy, signal, sys, time, warnings

import qkbench.cli  # what `python -m qkbench` imports first (harness/__main__.py)

jobs, parallel, timeout_s = json.loads(sys.stdin.read())
sys.stdout.flush()
sys.stderr.flush()


def child(args, stdout_path, stderr_path):
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, stdout_path), (2, stderr_path)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.argv = ["-m", *args]
        try:
            runpy.run_module("qkbench", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:
            if exit.code is None:
                code = 0
            elif isinstance(exit.code, int):
                code = exit.code
            else:  # sys.exit("message"): printed to stderr, status 1
                print(exit.code, file=sys.stderr)
                code = 1
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def fork(job):
    with warnings.catch_warnings():  # Python 3.12+ warns the parent about forking with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        child(*job)
    return pid


statuses, running, queue = [None] * len(jobs), {}, list(enumerate(jobs))
while queue or running:
    while queue and len(running) < parallel:
        index, job = queue.pop(0)
        running[fork(job)] = (index, time.monotonic())
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid == 0:
        for pid, (index, started) in list(running.items()):
            if time.monotonic() - started > timeout_s:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)
        continue
    index, _ = running.pop(pid)
    statuses[index] = os.waitstatus_to_exitcode(status)
print(json.dumps(statuses))
"""


def run_many(commands: list[list[str]], folder: Path, cwd: Path, env: dict[str, str],
             parallel: int | None = None, timeout_s: float = 120) -> list[tuple[int, str, str]]:
    """(exit status, stdout, stderr) of `python -m qkbench ARGS` for each ARGS in `commands`,
    each in a process of its own (a negative status: killed by that signal)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [[list(args), str(folder / f"{i}.out"), str(folder / f"{i}.err")]
            for i, args in enumerate(commands)]
    server = subprocess.run([sys.executable, "-c", _SERVER], cwd=cwd, env=env,
                            input=json.dumps([jobs, parallel or os.cpu_count() or 2, timeout_s]),
                            capture_output=True, text=True, timeout=timeout_s * len(jobs) + 60,
                            check=False)
    assert server.returncode == 0, server.stderr[-3000:]
    statuses = json.loads(server.stdout.splitlines()[-1])
    read = lambda path: Path(path).read_text(encoding="utf-8", errors="replace")  # noqa: E731
    return [(status, read(out), read(err)) for status, (_, out, err) in zip(statuses, jobs)]
