"""Process isolation: each backend runs in a worker process of its own.

One library's thread pool, allocator or crash can then not disturb another, and the main
process survives a segfault, an abort or a hang in any backend. The main process talks to a
worker over a pipe with small request tuples; the worker answers each with
``("ok", payload)`` or ``("fail", status, reason)``.

Requests: ``("ping",)`` — answered at once (measures start-up); ``("load",)`` — the backend's
`load()` (imports its library), sent with the ping as a run starts; ``("open",)`` — instantiate and
ask `unavailable()`; ``("setup", folder, plan, first)``
— load the shape's inputs, cast, prepare, first call, agreement check (every reference row in
the cell's `first` worker, a random share in the others), warm-up and block size;
``("sample", count, round, wall_limit_s)`` — up to `count` timed samples, fewer once `wall_limit_s`
has passed; ``("check",)`` — whether this process gets its
threads' parallel speed-up now (see qkbench.machine.canary); ``("verify", once)`` — after
sampling, the checks that the timed work was real (untouched inputs, a timed call's answer, and
with `once`, in one worker per cell, idle after sync() and the fresh input set; see
qkbench.measure.checks);
``("release",)`` — drop the cell's arrays.

`WorkerHandle` (main process side) turns a dead worker into status ``crashed`` and a silent one
into ``timeout``; the next request starts a fresh worker, so the sweep goes on.

A worker of another environment (`qkbench.measure.environments`) runs that environment's
qkbench: `PROTOCOL_VERSION` names the requests and replies above, and the main process
refuses an environment whose qkbench speaks another version before any cell runs. Change it
whenever a request, a reply or a pickled type they carry (`CellPlan`, `Sample`) changes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from qkbench.backends.gpu_support import is_out_of_memory
from qkbench.machine.allocator import steady_allocator
from qkbench.machine.idle_threads import quiet_idle_threads
from qkbench.measure.cell import CellFailure
from qkbench.measure.session import Session

# The version of the requests and replies between the main process and a worker (2: replies
# carry CellFigures, not dicts).
PROTOCOL_VERSION = 2


def serve(fd: int) -> None:
    """A worker started in another environment's interpreter (`Environment.start`): its end
    of the pipe is inherited as file descriptor `fd`, and the first message names the backend
    and its options."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        backend_path, options = conn.recv()
    except (EOFError, OSError):
        return
    worker_main(conn, backend_path, options)


def worker_main(conn: Connection, backend_path: str, options: dict[str, Any]) -> NoReturn:
    # Ctrl-C goes to the whole process group; the main process decides what stops, and when.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    steady_allocator()  # before any backend allocates (qkbench.machine.allocator says why)
    session: Session | None = None
    while True:
        try:
            request = conn.recv()
        except (EOFError, ConnectionResetError):
            _end_now()  # the main process closed the pipe or has gone
        if request[0] == "ping":  # answered before the backend is even imported
            reply: tuple[Any, ...] = ("ok", None)
        else:
            try:
                if session is None:
                    session = Session(backend_path, options)
                reply = ("ok", session.handle(request))
            except CellFailure as failure:
                reply = ("fail", failure.status, failure.reason, failure.details)
            except MemoryError:
                reply = ("fail", "oom", "out of host memory", {})
            except Exception as exc:
                status = "oom" if is_out_of_memory(exc) else "error"
                reply = ("fail", status, _describe(exc), {})
        if not _send(conn, reply):
            _end_now()


def _end_now() -> NoReturn:
    """End the worker without the interpreter's teardown. A worker holds nothing that must be
    written back (its results went down the pipe, and `Backend.cleanup()` ran after each cell),
    while tearing down torch's or numba's modules and thread pools took 0.4-0.75 s per worker
    on the 2-vCPU Zen 5 VM, which the main process waited out at the end of every run (2-4 s
    of a default run's 60); `os._exit` takes a few milliseconds. atexit handlers do not run."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _send(conn: Connection, reply: tuple[Any, ...]) -> bool:
    """Send a reply; False when the main process has gone (interrupted or finished)."""
    try:
        try:
            conn.send(reply)
        except (BrokenPipeError, EOFError, ConnectionResetError):
            raise
        except Exception as exc:  # e.g. a payload that cannot be pickled
            conn.send(("fail", "error", f"cannot send result: {_describe(exc)}", {}))
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return False
    return True


def _describe(exc: BaseException) -> str:
    """One line: the exception and where in the backend it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


# ---------------------------------------------------------------- main process side

# Spawning a worker and importing the harness takes about a second; a minute means it is stuck.
START_TIMEOUT_S = 60.0
# Importing a backend's library (torch, numba) takes seconds; a few minutes means it is stuck.
LOAD_TIMEOUT_S = 180.0

@contextlib.contextmanager
def _quiet_when_idle() -> Iterator[None]:
    """The environment a worker starts with: thread pools that stop spinning when idle (see
    qkbench.machine.idle_threads). Set in this process only while the worker is spawned (it inherits
    the environment), for programs that use the runner without the CLI."""
    added = quiet_idle_threads()
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class WorkerHandle:
    """The main process's end of one backend's worker; restarts it after a crash or hang.
    With an `environment` (qkbench.measure.environments.Environment), the worker runs that
    environment's interpreter; without, this process's (spawned by multiprocessing)."""

    def __init__(self, backend_path: str, options: dict[str, Any],
                 environment: Any = None) -> None:
        self._path, self._options = backend_path, options
        self._environment = environment
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or locks
        self._process: Any = None
        self._conn: Connection | None = None
        self.starts = 0
        self.startup_s = 0.0
        self._pinged = False  # launched, and its answer to the ping not read yet
        self._loading = False  # launched with a load, whose answer is not read yet
        self._launched_at = 0.0

    def launch(self, load: bool = False) -> None:
        """Start the worker without waiting for it to answer; with `load`, it also runs the
        backend's `load()` (imports its library). The runner launches every worker at once,
        so their start-ups (an interpreter, the harness, torch) overlap instead of queueing;
        the next request waits for the answers."""
        if self.alive:
            return
        self._launched_at = time.monotonic()
        self.starts += 1
        parent_end, child_end = self._context.Pipe()
        with _quiet_when_idle():
            if self._environment is None:
                self._process = self._context.Process(
                    target=worker_main, args=(child_end, self._path, self._options), daemon=True)
                self._process.start()
            else:
                self._process = self._environment.start(child_end.fileno())
        child_end.close()
        self._conn = parent_end
        try:
            if self._environment is not None:
                parent_end.send((self._path, self._options))  # what `serve` reads first
            parent_end.send(("ping",))
            self._pinged = True
            if load:
                parent_end.send(("load",))
                self._loading = True
        except OSError:
            pass  # a worker that dies at start-up is reported by the request that follows

    def _wait_launched(self) -> None:
        """Read the answer to the ping; the time since the launch is start-up (a worker that
        dies or hangs at start-up is reported by the request that follows)."""
        conn, self._pinged = self._conn, False
        try:
            if conn is not None and conn.poll(START_TIMEOUT_S):
                conn.recv()
            if self._loading and conn is not None:
                self._loading = False
                # Its answer is not needed (a failed load is met again by the cell), but it
                # must be read: a load still running past the limit is stopped, so that no late
                # answer is taken for the next request's.
                if conn.poll(LOAD_TIMEOUT_S):
                    conn.recv()
                else:
                    self.stop()
        except (EOFError, OSError):
            self._loading = False
        self.startup_s += max(0.0, time.monotonic() - self._launched_at)

    def _start(self) -> None:
        """Start a worker and wait until it answers, so start-up is counted on its own."""
        self.launch()
        self._wait_launched()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def ensure_started(self) -> None:
        """Start the process now if it is not running, and wait for what `launch` asked (its
        start-up is `startup_s`, which a cell's time limit must not be charged with)."""
        if self._process is None or not self._process.is_alive():
            self._start()
        elif self._pinged or self._loading:
            self._wait_launched()
            if self._process is None:  # stopped for a load that hung: start afresh
                self._start()

    def request(self, message: tuple[Any, ...], timeout_s: float) -> Any:
        """Send one request; return the payload or raise CellFailure."""
        self.ensure_started()
        assert self._conn is not None
        try:
            self._conn.send(message)
            if not self._conn.poll(max(timeout_s, 0.0)):
                self.stop()
                raise CellFailure("timeout", f"no answer within the cell's {timeout_s:.3g} s left")
            reply = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            raise CellFailure("crashed", self._death_reason()) from None
        if reply[0] == "ok":
            return reply[1]
        _, status, reason, details = reply
        raise CellFailure(status, reason, details)

    def _death_reason(self) -> str:
        process = self._process
        process.join(timeout=5)
        code = process.exitcode
        self._conn = None
        self._process = None
        if code is None:
            return "worker stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"worker process killed by {name}"
        return f"worker process exited with code {code}"

    def hang_up(self) -> None:
        """Close the pipe: the worker reads the end of it and exits by itself. The runner hangs
        up on every worker before it waits for any (`handles.stop_workers`), so they end at
        once rather than one after the other."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        """End the worker (politely first); used after a timeout and at the end of a run."""
        if self._process is None:
            return
        self.hang_up()
        self._process.join(timeout=0.5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._process = None


