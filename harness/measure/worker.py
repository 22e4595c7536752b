"""Process isolation: each backend runs in a worker process of its own.

One library's thread pool, allocator or crash can then not disturb another, and the main
process survives a segfault, an abort or a hang in any backend. The main process talks to a
worker over a pipe with small request tuples; the worker answers each with
``("ok", payload)`` or ``("fail", status, reason)``.

Requests: ``("ping",)`` — answered at once (measures start-up); ``("open",)`` — instantiate and
ask `unavailable()`; ``("setup", cell, folder, plan)``
— load the shape's inputs, cast, prepare, first call, agreement check, warm-up and block size;
``("sample", count, round)`` — timed samples; ``("check",)`` — whether this process gets its
threads' parallel speed-up now (see qkbench.machine.canary); ``("verify", once)`` — after
sampling, the checks that the timed work was real (untouched inputs, a timed call's answer, and
with `once`, in one worker per cell, idle after sync() and the fresh input set; see
qkbench.measure.checks);
``("release",)`` — drop the cell's arrays.

`WorkerHandle` (main process side) turns a dead worker into status ``crashed`` and a silent one
into ``timeout``; the next request starts a fresh worker, so the sweep goes on.
"""

from __future__ import annotations

import contextlib
import math
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

import numpy as np

from qkbench.backends.base import Problem
from qkbench.backends.gpu_support import is_out_of_memory
from qkbench.measure import agreement, checks, inputs
from qkbench.machine.idle_threads import quiet_idle_threads
from qkbench.measure.kernel_timer import KernelTimer


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
    cuda_graphs: bool = False  # capture each block as a CUDA graph (backends with a clock)


# A cold-cache cell rotates through copies of its inputs that together exceed twice the cache;
# tiny inputs would need absurdly many copies, so this caps it (and the row says how many).
MAX_COLD_COPIES = 1 << 14
# An honest CPU backend's to_numpy takes at most about a copy of S; allowed: this many timed
# calls, this many copies, and this floor for the clock reads and a Python call or two.
TO_NUMPY_CALLS = 4
TO_NUMPY_COPIES = 4
TO_NUMPY_FLOOR_S = 10e-6
# A call on inputs no cached answer fits may take this many of the timed calls just before it
# (plus the floor: a Python call, a sync and an allocation) before the timed ones count as
# replayed: an honest call whose inputs come from memory rather than cache is a few times
# slower at worst (a memory-bound product at DRAM versus last-level-cache bandwidth, on the
# VM about 10x apart).
REPLAY_FACTOR = 20.0
REPLAY_FLOOR_S = 100e-6


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
        self.block_s = 0.0
        # The fastest per-call time of the cell's blocks: what the checks after timing compare
        # with (the fastest, since a preempted block on a busy machine says nothing of it).
        self.fastest_call_s = math.inf
        self.to_host_s: list[float] = []  # the cell's to_numpy times (first, timed, fresh)
        self.threads_set = False
        self.cell_threads: int | None = None
        # One machine check per thread count a cell asked for: its best time is only
        # comparable with readings taken on as many threads.
        self.canaries: dict[int | None, Any] = {}
        self.check_margin = 0.0
        self.cell: _CellState | None = None  # what the checks after timing need

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
        if kind == "verify":
            return self.verify(request[1])
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
        self.to_host_s = []
        shape = inputs.load(Path(shape_folder))
        problem = _problem(shape)
        set_problem = getattr(backend, "set_problem", None)
        if callable(set_problem):  # the base class's; a duck-typed 2-D plugin may lack it
            set_problem(problem)
        q, k = inputs.cast(shape.q, plan.dtype), inputs.cast(shape.k, plan.dtype)
        precision = _precision(backend, plan.dtype)
        # Device events time the kernel phase only: end to end, host work is part of the time.
        device_clock = _device_clock(backend) if plan.phase == "kernel" else None
        # A cold cache on a device with its own clock: one input set and an L2 flush before
        # each call, outside the events. Elsewhere: a rotation through input copies.
        flush = plan.cache == "cold" and device_clock is not None
        copies = 1
        if plan.cache == "cold" and not flush:
            copies = cold_copies(q.nbytes + k.nbytes, backend.cache_bytes() or plan.host_cache_bytes)
        self._check_device_memory(q, k, copies, plan)
        backend.reset_peak_memory()
        host_sets = [(q, k)] + [(q.copy(), k.copy()) for _ in range(copies - 1)]
        fn, arg_sets, to_host = _timed_call(backend, plan.phase, host_sets)
        self.timer = KernelTimer(fn, arg_sets, backend.sync, device_clock=device_clock,
                                 flush_between_calls=flush,
                                 graphs=plan.cuda_graphs and device_clock is not None)
        # Pristine bits of what the backend is given, before it has run once.
        guard = checks.InputGuard.take(backend, (inputs.cast(shape.q, plan.dtype),
                                                 inputs.cast(shape.k, plan.dtype)),
                                       host_sets, arg_sets if plan.phase == "kernel" else [])
        self.cell = _CellState(Path(shape_folder), plan, precision, shape.reference, to_host,
                               guard, problem.s_shape())
        prepared = clock()
        result, first_call_s = self.timer.first_call()
        figures: dict[str, Any] = {"first_call_s": first_call_s, "precision": precision,
                                   "cache_copies": copies, "setup_s": prepared - started,
                                   "cache_bytes": backend.cache_bytes() or plan.host_cache_bytes,
                                   "clock": getattr(device_clock, "name", "cuda-events")
                                   if device_clock is not None else "host",
                                   "l2_flush": flush, "info": _safe_info(backend)}
        checked = clock()
        host = self._to_host(to_host, result)
        _check_agreement(host, shape.reference, problem.s_shape(), plan.dtype,
                         precision, figures, "first_call")
        figures["agreement_s"] = clock() - checked
        del result
        warm_start = clock()
        self.calls, block_s = self.timer.calibrate(plan.min_sample_s, plan.warmup_s)
        self.block_s = block_s
        self.fastest_call_s = block_s / self.calls
        figures.update(calls_per_sample=self.calls, block_s=block_s,
                       warmup_s=clock() - warm_start,
                       # False when asked but the library could not capture: rows say so.
                       cuda_graph=self.timer.uses_graphs)
        if device_clock is not None:
            figures["launch_overhead_s"] = self.timer.launch_overhead()
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
        # One set more than the copies: the fresh set the checks after timing prepare.
        inputs_bytes = (copies + 1) * (q.nbytes + k.nbytes) * (2 if plan.phase == "end_to_end"
                                                               else 1)
        needed = inputs_bytes + 2 * math.prod(q.shape[:-1]) * k.shape[-2] * q.itemsize
        if needed > 0.9 * free:
            raise CellFailure("skipped", f"needs about {needed / 2**30:.1f} GiB of device "
                              f"memory, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")

    def sample(self, count: int, round_number: int) -> list[Any]:
        assert self.timer is not None, "sample before setup"
        samples = self.timer.samples(count, self.calls, round_number)
        self.fastest_call_s = min([self.fastest_call_s, *(s.seconds for s in samples)])
        return samples

    def verify(self, once: bool) -> dict[str, Any]:
        """After sampling: the checks that the timed calls did the work they were timed on, in
        the order that names the root cause (changed inputs make every later answer wrong).
        Raises CellFailure naming the check; returns the figures of the checks that passed."""
        assert self.timer is not None and self.cell is not None, "verify before setup"
        cell, backend, timer = self.cell, self.backend, self.timer
        started = time.perf_counter()
        figures: dict[str, Any] = {}
        changed = cell.guard.changed(backend)
        if changed:
            raise _failed("untouched_inputs", changed)
        kept, timer.kept = timer.kept, None  # None only when the cell was never sampled
        if once:  # in one of the cell's workers: the checks whose cost is not per process
            # Before anything waits for an answer: work a backend left running is then still
            # queued. One more block as the timed ones are (a cheat's leftover grows with
            # it), lasting at least as long as honest idle threads may spin; then watch.
            allowance = checks.spin_allowance_s() or 0.0
            calls = self.calls * max(1, math.ceil(allowance * checks.usable_cores()
                                                  / max(self.block_s, 1e-9)))
            _, block_s = timer.time_block(calls)
            timer.kept = None
            idle = checks.idle_after_sync(backend, block_s)
            figures.update(cpu_after_sync_s=idle.cpu_s, device_after_sync_s=idle.device_s)
            if idle.reason:
                raise _failed("idle_after_sync", idle.reason, figures)
        if kept is not None:
            # The first worker checks every reference row; the others a random share of them
            # (the backend cannot know which), so the cost stays that of about one check.
            reference = cell.reference if once else _some_rows(cell.reference)
            _check_agreement(self._to_host(cell.to_host, kept), reference, cell.shape,
                             cell.plan.dtype, cell.precision, {}, "timed_call")
            del kept
        if once:
            host = self._check_fresh(cell)
            deferred = self._deferred_work(host)
            if deferred:
                raise _failed("to_numpy", deferred, figures)
            replayed = self._replayed(figures)
            if replayed:
                raise _failed("replay", replayed, figures)
        figures["verify_s"] = time.perf_counter() - started
        return figures

    def _to_host(self, to_host: Any, result: Any) -> Any:
        """`to_host(result)`, timing it: see `_deferred_work`."""
        start = time.perf_counter()
        host = to_host(result)
        self.to_host_s.append(time.perf_counter() - start)
        return host

    def _deferred_work(self, host: Any) -> str | None:
        """Why the cell's answers seem computed in `to_numpy` rather than in the timed call.

        Only for CPU backends in the kernel phase, where `to_numpy` is not timed and has no
        transfer to make: it may at most copy S, and the timed call must at least write S, so
        an honest `to_numpy` never takes much longer than a call plus a copy. A lazy backend's
        takes the whole product. The fastest of the cell's (three) conversions is compared,
        so one preempted conversion on a busy machine is not mistaken for work."""
        cell = self.cell
        if (cell is None or cell.plan.phase != "kernel" or self.backend.device != "cpu"
                or not isinstance(host, np.ndarray) or len(self.to_host_s) < 2):
            return None
        copies = []
        for _ in range(3):
            start = time.perf_counter()
            host.copy()
            copies.append(time.perf_counter() - start)
        per_call = self.fastest_call_s
        allowed = (TO_NUMPY_CALLS * per_call + TO_NUMPY_COPIES * min(copies)
                   + TO_NUMPY_FLOOR_S)
        fastest = min(self.to_host_s)
        if fastest <= allowed:
            return None
        return (f"to_numpy() took at least {fastest:.3g} s on each of {len(self.to_host_s)} "
                f"answers, where a timed call takes {per_call:.3g} s and a copy of S "
                f"{min(copies):.3g} s: the work is done outside the timed call")

    def _replayed(self, figures: dict[str, Any]) -> str | None:
        """Why the timed calls seem to replay answers rather than compute them: a call on new
        inputs (which no remembered answer fits) takes many times what the timed calls just
        before it took.

        Side by side: each new-input call follows a block of timed calls at once, so both
        meet the same machine, with the thread pool awake (on a busy machine, waking sleeping
        pool threads alone can cost tens of milliseconds). The closer ratio of two sets is
        compared, so one preempted call is not mistaken for a replay. The new inputs are the
        fresh set negated, and with its rows rotated: values no fingerprint of the timed
        inputs matches, at the cost of copies instead of new random numbers. It costs about
        four calls, whatever the size.

        CPU backends only: a GPU backend may legitimately pay for new inputs (a CUDA graph
        captured for the timed buffers is captured again), and a GPU's datasheet peak is
        always at hand for the speed check."""
        cell, timer = self.cell, self.timer
        if cell is None or timer is None or self.backend.device != "cpu":
            return None
        shape = inputs.load(inputs.fresh_folder(cell.folder))
        q, k = inputs.cast(shape.q, cell.plan.dtype), inputs.cast(shape.k, cell.plan.dtype)
        new_sets = [(-q, k), (np.roll(q, 1, axis=-2), np.roll(k, 1, axis=-2))]  # rows, any rank
        # Prepared before any timing: nothing but the call itself sits between block and call.
        prepared = [_timed_call(self.backend, cell.plan.phase, [new]) for new in new_sets]
        ratios = []
        warm_calls = max(1, self.calls // 4)  # enough to wake the pool and time a call
        for fn, arg_sets, _ in prepared:
            _, block_s = timer.time_block(warm_calls)
            start = time.perf_counter()
            fn(*arg_sets[0])
            self.backend.sync()
            new_s = time.perf_counter() - start
            timed_s = block_s / warm_calls
            ratios.append((new_s / max(timed_s, 1e-12), new_s, timed_s))
        timer.kept = None
        ratio, new_s, timed_s = min(ratios)
        figures["new_inputs_ratio"] = ratio
        if new_s <= REPLAY_FACTOR * timed_s + REPLAY_FLOOR_S:
            return None
        return (f"a call on new inputs took {new_s:.3g} s, {ratio:,.0f}× the {timed_s:.3g} s of "
                f"the timed calls just before it (the closest of {len(ratios)} sets): the timed "
                "calls did not compute their answers")

    def _check_fresh(self, cell: _CellState) -> Any:
        """S of a second, independently seeded input set: an answer remembered from the timed
        inputs (or computed once and replayed) cannot agree with its reference."""
        shape = inputs.load(inputs.fresh_folder(cell.folder))
        host = [(inputs.cast(shape.q, cell.plan.dtype), inputs.cast(shape.k, cell.plan.dtype))]
        fn, arg_sets, to_host = _timed_call(self.backend, cell.plan.phase, host)
        self.backend.sync()
        result = fn(*arg_sets[0])
        self.backend.sync()
        host = self._to_host(to_host, result)
        _check_agreement(host, shape.reference, cell.shape, cell.plan.dtype,
                         cell.precision, {}, "fresh_inputs")
        return host

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
        self.cell = None
        if self.threads_set:  # nothing leaks into the next cell
            self.backend.set_threads(None)
            self.threads_set = False
        self.backend.cleanup()
        return figures


def _problem(shape: inputs.ShapeInputs) -> Problem:
    """What the cell computes: the saved attention problem, or the plain product of Q and K."""
    if shape.reference.problem is not None:
        return shape.reference.problem
    return Problem(shape.q.shape[0], shape.k.shape[0], shape.q.shape[1])


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


@dataclass(frozen=True)
class _CellState:
    """What the checks after timing need to know of the cell set up last."""

    folder: Path
    plan: CellPlan
    precision: str
    reference: inputs.Reference
    to_host: Any
    guard: checks.InputGuard
    shape: tuple[int, ...]  # of S: (n, m), or (B, H, n, m)


# Rows of S the other workers of a cell check in a timed call's answer (all when fewer).
SOME_ROWS = 256


def _some_rows(reference: inputs.Reference) -> inputs.Reference:
    """A random share of a reference's rows, drawn from OS entropy."""
    if len(reference.rows) <= SOME_ROWS:
        return reference
    picked = np.sort(np.random.default_rng().choice(len(reference.rows), SOME_ROWS,
                                                    replace=False))
    return inputs.Reference(rows=reference.rows[picked], values=reference.values[picked],
                            q_norms=reference.q_norms, k_norms=reference.k_norms,
                            d_k=reference.d_k)


def _failed(check: str, detail: str, figures: dict[str, Any] | None = None) -> CellFailure:
    """The failure of one check: its status, a reason that opens with the check's name, and
    the check in `failed_check`."""
    return CellFailure(checks.status(check), checks.reason(check, detail),
                       {**(figures or {}), "failed_check": check})


def _check_agreement(host: Any, reference: inputs.Reference, shape: tuple[int, ...], dtype: str,
                     precision: str, figures: dict[str, Any], check: str) -> None:
    """Add the error figures to `figures`; raise the `check`'s failure when S is wrong."""
    bad_output = agreement.check_output(host, shape, dtype)
    if bad_output:
        raise _failed(check, bad_output, figures)
    verdict = agreement.compare(host, reference, precision)
    errors = {"max_err": verdict.max_err, "mean_err": verdict.mean_err,
              "err_bound": verdict.bound, "checked_rows": verdict.checked_rows,
              "outside_share": verdict.outside_share,
              "worst_i": verdict.worst[0] if verdict.worst else None,
              "worst_j": verdict.worst[1] if verdict.worst else None}
    if not verdict.passed:
        # The failing answer's figures replace the first call's: the row shows what gave it away.
        raise _failed(check, verdict.reason or "", {**figures, **errors})
    figures.update(errors)


def _device_clock(backend: Any) -> Any:
    """The backend's device clock, or None (also for plugins written before the hook)."""
    hook = getattr(backend, "device_clock", None)
    return hook() if callable(hook) else None


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
    """A backend's info() must never fail a cell: it is only facts about the row (a fact with
    a column of its own fills it, the rest is kept in the row's `info` mapping)."""
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

