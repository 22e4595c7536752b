"""Process isolation: each backend runs in a worker process of its own.

One library's thread pool, allocator or crash can then not disturb another, and the main
process survives a segfault, an abort or a hang in any backend. The main process talks to a
worker over a pipe with small request tuples; the worker answers each with
``("ok", payload)`` or ``("fail", status, reason)``.

Requests: ``("open",)`` — instantiate and ask `unavailable()`; ``("setup", cell, folder, plan)``
— load the shape's inputs, cast, prepare, first call, agreement check, warm-up and block size;
``("sample", count, round)`` — timed samples; ``("release",)`` — drop the cell's arrays.

`WorkerHandle` (main process side) turns a dead worker into status ``crashed`` and a silent one
into ``timeout``; the next request starts a fresh worker, so the sweep goes on.
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from harness import agreement, inputs
from harness.timing import KernelTimer


@dataclass(frozen=True)
class CellPlan:
    """What a worker needs to know to set up one cell."""

    dtype: str
    min_sample_s: float
    warmup_s: float


class CellFailure(Exception):
    """A cell ended without timings: `status` is error, crashed, timeout, oom or mismatch."""

    def __init__(self, status: str, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.details = status, reason, details or {}


# ---------------------------------------------------------------- worker process side


class _Session:
    """The worker's state: one backend, and the prepared inputs of the current cell."""

    def __init__(self, backend_path: str, options: dict[str, Any]) -> None:
        from backends.registry import load_class

        self.backend = load_class(backend_path)(**options)
        self.timer: KernelTimer | None = None
        self.calls = 1

    def open(self) -> dict[str, Any]:
        return {"unavailable": self.backend.unavailable()}

    def setup(self, shape_folder: str, plan: CellPlan) -> dict[str, Any]:
        backend = self.backend
        shape = inputs.load(Path(shape_folder))
        q, k = inputs.cast(shape.q, plan.dtype), inputs.cast(shape.k, plan.dtype)
        pq, pk = backend.prepare(q, k)
        self.timer = KernelTimer(lambda: backend.scores(pq, pk), backend.sync)
        result, first_call_s = self.timer.first_call()
        host = backend.to_numpy(result)
        figures: dict[str, Any] = {"first_call_s": first_call_s, **_safe_info(backend)}
        bad_output = agreement.check_output(host, (q.shape[0], k.shape[0]), plan.dtype)
        if bad_output:
            raise CellFailure("mismatch", bad_output, figures)
        verdict = agreement.compare(host, shape.reference, plan.dtype)
        figures.update(max_err=verdict.max_err, mean_err=verdict.mean_err,
                       err_bound=verdict.bound, checked_rows=verdict.checked_rows)
        if not verdict.passed:
            raise CellFailure("mismatch", verdict.reason or "", figures)
        del result, host
        self.calls, block_s = self.timer.calibrate(plan.min_sample_s, plan.warmup_s)
        figures.update(calls_per_sample=self.calls, block_s=block_s)
        return figures

    def sample(self, count: int, round_number: int) -> list[Any]:
        assert self.timer is not None, "sample before setup"
        return self.timer.samples(count, self.calls, round_number)

    def release(self) -> None:
        self.timer = None


def _safe_info(backend: Any) -> dict[str, Any]:
    """A backend's info() must never fail a cell: it is only extra columns."""
    try:
        info = backend.info()
        return {k: v for k, v in dict(info).items() if isinstance(v, (str, int, float, bool))}
    except Exception:
        return {}


def worker_main(conn: Connection, backend_path: str, options: dict[str, Any]) -> None:
    # Ctrl-C goes to the whole process group; the main process decides what stops, and when.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    session: _Session | None = None
    while True:
        try:
            request = conn.recv()
        except (EOFError, ConnectionResetError):
            return  # the main process closed the pipe or has gone
        kind = request[0]
        try:
            if session is None:
                session = _Session(backend_path, options)
            if kind == "open":
                reply: tuple[Any, ...] = ("ok", session.open())
            elif kind == "setup":
                reply = ("ok", session.setup(request[1], request[2]))
            elif kind == "sample":
                reply = ("ok", session.sample(request[1], request[2]))
            elif kind == "release":
                session.release()
                reply = ("ok", None)
            else:
                reply = ("fail", "error", f"unknown request {kind!r}", {})
        except CellFailure as failure:
            reply = ("fail", failure.status, failure.reason, failure.details)
        except MemoryError:
            reply = ("fail", "oom", "out of host memory", {})
        except Exception as exc:
            if session is not None:
                session.release()
            reply = ("fail", "error", _describe(exc), {})
        try:
            try:
                conn.send(reply)
            except (BrokenPipeError, EOFError, ConnectionResetError):
                raise
            except Exception as exc:  # e.g. a payload that cannot be pickled
                conn.send(("fail", "error", f"cannot send result: {_describe(exc)}", {}))
        except (BrokenPipeError, EOFError, ConnectionResetError):
            return  # the main process has gone (interrupted or finished): nobody to answer


def _describe(exc: BaseException) -> str:
    """One line: the exception and where in the backend it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


# ---------------------------------------------------------------- main process side


class WorkerHandle:
    """The main process's end of one backend's worker; restarts it after a crash or hang."""

    def __init__(self, backend_path: str, options: dict[str, Any]) -> None:
        self._path, self._options = backend_path, options
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or locks
        self._process: Any = None
        self._conn: Connection | None = None
        self.starts = 0

    def _start(self) -> None:
        self.starts += 1
        parent_end, child_end = self._context.Pipe()
        self._process = self._context.Process(
            target=worker_main, args=(child_end, self._path, self._options), daemon=True)
        self._process.start()
        child_end.close()
        self._conn = parent_end

    def request(self, message: tuple[Any, ...], timeout_s: float) -> Any:
        """Send one request; return the payload or raise CellFailure."""
        if self._process is None or not self._process.is_alive():
            self._start()
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

    def stop(self) -> None:
        """End the worker (politely first); used after a timeout and at the end of a run."""
        if self._process is None:
            return
        if self._conn is not None:
            self._conn.close()
        self._process.join(timeout=0.5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._process = None
        self._conn = None

