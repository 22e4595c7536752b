"""Process isolation: each backend runs in a worker process of its own.

One library's thread pool, allocator or crash can then not disturb another, and the main
process survives a segfault, an abort or a hang in any backend. The main process talks to a
worker over a pipe with small request tuples; the worker answers each with
``("ok", payload)`` or ``("fail", status, reason)``.

Requests: ``("ping",)`` — answered at once (measures start-up); ``("open",)`` — instantiate and
ask `unavailable()`; ``("setup", cell, folder, plan)``
— load the shape's inputs, cast, prepare, first call, agreement check, warm-up and block size;
``("sample", count, round)`` — timed samples; ``("check",)`` — whether this process gets its
threads' parallel speed-up now (see qkbench.machine.canary); ``("release",)`` — drop the cell's
arrays.

`WorkerHandle` (main process side) turns a dead worker into status ``crashed`` and a silent one
into ``timeout``; the next request starts a fresh worker, so the sweep goes on.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from qkbench.backends.gpu_support import is_out_of_memory
from qkbench.measure import agreement
from qkbench.measure import inputs
from qkbench.machine.idle_threads import quiet_idle_threads
from qkbench.measure.timing import KernelTimer


@dataclass(frozen=True)
class CellPlan:
    """What a worker needs to know to set up one cell."""

    dtype: str
    min_sample_s: float
    warmup_s: float
    phase: str = "kernel"
    cache: str = "warm"
    threads: int | None = None
    host_cache_bytes: int = 32 << 20  # the host CPU's last-level cache
    check_margin: float = 0.0  # the machine check's least margin (see machine.canary.fence)


# A cold-cache cell rotates through copies of its inputs that together exceed twice the cache;
# tiny inputs would need absurdly many copies, so this caps it (and the row says how many).
MAX_COLD_COPIES = 1 << 14


def cold_copies(set_bytes: int, cache_bytes: int) -> int:
    """How many input copies make a rotation that no cache level can hold."""
    return int(min(MAX_COLD_COPIES, max(2, -(-2 * cache_bytes // max(set_bytes, 1)))))


class CellFailure(Exception):
    """A cell ended without timings: `status` is error, crashed, timeout, oom or mismatch."""

    def __init__(self, status: str, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.details = status, reason, details or {}


# ---------------------------------------------------------------- worker process side


class _Session:
    """The worker's state: one backend, and the prepared inputs of the current cell."""

    def __init__(self, backend_path: str, options: dict[str, Any]) -> None:
        from qkbench.backends.registry import load_class

        self.backend = load_class(backend_path)(**options)
        self.timer: KernelTimer | None = None
        self.calls = 1
        self.threads_set = False
        self.cell_threads: int | None = None
        # One machine check per thread count a cell asked for: its best time is only
        # comparable with readings taken on as many threads.
        self.canaries: dict[int | None, Any] = {}
        self.check_margin = 0.0

    def handle(self, request: tuple[Any, ...]) -> Any:
        kind = request[0]
        if kind == "open":
            return self.open()
        if kind == "setup":
            try:
                return self.setup(request[1], request[2])
            except BaseException:
                self.release()  # a failed cell leaves no thread limit or arrays behind
                raise
        if kind == "sample":
            return self.sample(request[1], request[2])
        if kind == "check":
            return self.check()
        if kind == "release":
            return self.release()
        raise ValueError(f"unknown request {kind!r}")

    def open(self) -> dict[str, Any]:
        return {"unavailable": self.backend.unavailable()}

    def setup(self, shape_folder: str, plan: CellPlan) -> dict[str, Any]:
        backend = self.backend
        clock = time.perf_counter
        started = clock()
        backend.set_threads(plan.threads)
        self.threads_set = plan.threads is not None
        self.cell_threads = plan.threads
        self.check_margin = plan.check_margin
        shape = inputs.load(Path(shape_folder))
        q, k = inputs.cast(shape.q, plan.dtype), inputs.cast(shape.k, plan.dtype)
        precision = _precision(backend, plan.dtype)
        copies = 1
        if plan.cache == "cold":
            copies = cold_copies(q.nbytes + k.nbytes, backend.cache_bytes() or plan.host_cache_bytes)
        self._check_device_memory(q, k, copies, plan)
        backend.reset_peak_memory()
        host_sets = [(q, k)] + [(q.copy(), k.copy()) for _ in range(copies - 1)]
        fn, arg_sets, to_host = _timed_call(backend, plan.phase, host_sets)
        self.timer = KernelTimer(fn, arg_sets, backend.sync)
        prepared = clock()
        result, first_call_s = self.timer.first_call()
        figures: dict[str, Any] = {"first_call_s": first_call_s, "precision": precision,
                                   "cache_copies": copies, "setup_s": prepared - started,
                                   **_safe_info(backend)}
        checked = clock()
        _check_agreement(to_host(result), shape.reference, (q.shape[0], k.shape[0]), plan.dtype,
                         precision, figures)
        figures["agreement_s"] = clock() - checked
        del result
        warm_start = clock()
        self.calls, block_s = self.timer.calibrate(plan.min_sample_s, plan.warmup_s)
        figures.update(calls_per_sample=self.calls, block_s=block_s,
                       warmup_s=clock() - warm_start)
        # Read after warm-up, when the clocks have risen to what sampling will see.
        figures.update(_telemetry(backend, "start"))
        return figures

    def _check_device_memory(self, q: Any, k: Any, copies: int, plan: CellPlan) -> None:
        """Skip (not fail) a cell whose inputs and outputs cannot fit in device memory: the
        input copies (twice in end-to-end, where each call makes its own) and two outputs."""
        memory = self.backend.device_memory()
        if memory is None:
            return
        free, total = memory
        inputs_bytes = copies * (q.nbytes + k.nbytes) * (2 if plan.phase == "end_to_end" else 1)
        needed = inputs_bytes + 2 * q.shape[0] * k.shape[0] * q.itemsize
        if needed > 0.9 * free:
            raise CellFailure("skipped", f"needs about {needed / 2**30:.1f} GiB of device "
                              f"memory, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")

    def sample(self, count: int, round_number: int) -> list[Any]:
        assert self.timer is not None, "sample before setup"
        return self.timer.samples(count, self.calls, round_number)

    def check(self) -> bool:
        """The machine check, in this process: a worker's threads can lose their speed-up
        while the main process's keep theirs (see `qkbench.runner.machine_check`)."""
        from qkbench.machine.canary import ParallelCanary

        canary = self.canaries.get(self.cell_threads)
        if canary is None:
            # No pause after a reading: the main process's own check follows each round's
            # worker checks and pauses for every process's BLAS threads to settle.
            canary = self.canaries[self.cell_threads] = ParallelCanary(
                settle_s=0.0, min_margin=self.check_margin)
            canary.warm_up()
        return bool(canary.fit())

    def release(self) -> dict[str, Any]:
        """End the cell: its closing telemetry and peak memory; undo per-cell settings."""
        figures: dict[str, Any] = {}
        if self.timer is not None:
            figures.update(_telemetry(self.backend, "end"))
            peak = self.backend.peak_memory_bytes()
            if peak is not None:
                figures["peak_device_bytes"] = int(peak)
        self.timer = None
        if self.threads_set:  # nothing leaks into the next cell
            self.backend.set_threads(None)
            self.threads_set = False
        self.backend.cleanup()
        return figures


def _timed_call(backend: Any, phase: str, host_sets: list[tuple[Any, Any]]
                ) -> tuple[Any, list[tuple[Any, Any]], Any]:
    """(the function to time, its argument sets, how to bring its result to the host)."""
    if phase == "kernel":
        # Inputs already where the backend wants them; the result stays there.
        return backend.scores, [backend.prepare(a, b) for a, b in host_sets], backend.to_numpy

    def end_to_end(a: Any, b: Any) -> Any:
        # Host arrays in, host array out: prepare (copies, casts, transfers) and to_numpy are
        # inside the time.
        return backend.to_numpy(backend.scores(*backend.prepare(a, b)))

    return end_to_end, host_sets, lambda s: s


def _check_agreement(host: Any, reference: inputs.Reference, shape: tuple[int, int], dtype: str,
                     precision: str, figures: dict[str, Any]) -> None:
    """Add the error figures to `figures`; raise CellFailure("mismatch") when S is wrong."""
    bad_output = agreement.check_output(host, shape, dtype)
    if bad_output:
        raise CellFailure("mismatch", bad_output, figures)
    verdict = agreement.compare(host, reference, precision)
    figures.update(max_err=verdict.max_err, mean_err=verdict.mean_err, err_bound=verdict.bound,
                   checked_rows=verdict.checked_rows)
    if not verdict.passed:
        raise CellFailure("mismatch", verdict.reason or "", figures)


def _precision(backend: Any, dtype: str) -> str:
    """The precision the backend computes a dtype in (TF32 for float32, say); the agreement
    bound uses it, so a backend that declares less precision is held to a looser bound."""
    precision = getattr(backend, "precision", None)
    return str(precision(dtype)) if callable(precision) else dtype


def _telemetry(backend: Any, when: str) -> dict[str, float]:
    """sm_clock_start_mhz, temperature_end_c, ...: a backend's readings, named by moment."""
    try:
        readings = backend.telemetry() or {}
    except Exception:  # telemetry is extra information; it never fails a cell
        return {}
    out = {}
    for key, value in readings.items():
        stem, _, unit = key.rpartition("_")
        if stem and isinstance(value, (int, float)):
            out[f"{stem}_{when}_{unit}"] = float(value)
    return out


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
        if request[0] == "ping":  # answered before the backend is even imported
            reply: tuple[Any, ...] = ("ok", None)
        else:
            try:
                if session is None:
                    session = _Session(backend_path, options)
                reply = ("ok", session.handle(request))
            except CellFailure as failure:
                reply = ("fail", failure.status, failure.reason, failure.details)
            except MemoryError:
                reply = ("fail", "oom", "out of host memory", {})
            except Exception as exc:
                status = "oom" if is_out_of_memory(exc) else "error"
                reply = ("fail", status, _describe(exc), {})
        if not _send(conn, reply):
            return


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
    """The main process's end of one backend's worker; restarts it after a crash or hang."""

    def __init__(self, backend_path: str, options: dict[str, Any]) -> None:
        self._path, self._options = backend_path, options
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or locks
        self._process: Any = None
        self._conn: Connection | None = None
        self.starts = 0
        self.startup_s = 0.0

    def _start(self) -> None:
        """Start a worker and wait until it answers, so start-up is counted on its own."""
        started = time.monotonic()
        self.starts += 1
        parent_end, child_end = self._context.Pipe()
        self._process = self._context.Process(
            target=worker_main, args=(child_end, self._path, self._options), daemon=True)
        with _quiet_when_idle():
            self._process.start()
        child_end.close()
        self._conn = parent_end
        try:
            parent_end.send(("ping",))
            if parent_end.poll(START_TIMEOUT_S):
                parent_end.recv()
        except (EOFError, OSError):
            pass  # a worker that dies at start-up is reported by the request that follows
        self.startup_s += time.monotonic() - started

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def ensure_started(self) -> None:
        """Start the process now if it is not running (its start-up is `startup_s`, which a
        cell's time limit must not be charged with)."""
        if self._process is None or not self._process.is_alive():
            self._start()

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

