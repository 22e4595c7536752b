"""How long a worker takes to end once the main process hangs up, with and without the
interpreter's teardown, for each backend's library. Measured, not assumed.

For every backend named (default: numpy, numba, torch-cpu, those installed), the script starts
`--workers` real qkbench workers that load the backend (`Backend.load`, as a run starts), then
times how long the main process waits for them all to end after hanging up:

  teardown:  the same worker, ending through `sys.exit` (the interpreter tears down its modules
             and the libraries' thread pools: how workers used to end);
  os._exit:  the worker as it ships (`qkbench.measure.worker._end_now`).

Both kinds are started, loaded and stopped alternately in the same run, `--repeats` times each,
so the ratio holds though absolute times drift.

    python benchmarks/worker_exit.py
    python benchmarks/worker_exit.py --backends numpy torch-cpu --repeats 5
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

from qkbench.backends.registry import resolve
from qkbench.machine.environment import cpu_info
from qkbench.measure import worker as worker_module
from qkbench.measure.handles import stop_workers
from qkbench.measure.worker import WorkerHandle

# The library each backend's `load()` imports: a backend whose library is missing is skipped.
LIBRARIES = {"numpy": "numpy", "numba": "numba", "torch-cpu": "torch"}


def _worker_with_teardown(conn, backend_path: str, options: dict) -> None:
    """qkbench's worker, but ending through the interpreter's normal exit."""
    worker_module._end_now = lambda: sys.exit(0)
    worker_module.worker_main(conn, backend_path, options)


class TeardownHandle(WorkerHandle):
    """A WorkerHandle whose process runs `_worker_with_teardown`."""

    def launch(self, load: bool = False) -> None:
        original = worker_module.worker_main
        worker_module.worker_main = _worker_with_teardown
        try:
            super().launch(load)
        finally:
            worker_module.worker_main = original


def _time_stop(handle_class: type[WorkerHandle], backend: str, workers: int) -> float:
    spec = resolve(backend)
    handles = [handle_class(spec.path, dict(spec.options)) for _ in range(workers)]
    for handle in handles:
        handle.launch(load=True)
    for handle in handles:
        handle.ensure_started()
    started = time.monotonic()
    stop_workers(handles)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(LIBRARIES))
    parser.add_argument("--workers", type=int, default=3, help="the runner's default")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpu = cpu_info()
    print(f"{cpu['model']} ({cpu.get('microarchitecture', 'unknown')}, "
          f"{cpu['usable_cores']} usable cores); {args.workers} workers, {args.repeats} repeats "
          f"each, medians")
    print(f"{'backend':<10} {'teardown':>10} {'os._exit':>10} {'ratio':>7}")
    for backend in args.backends:
        try:
            importlib.import_module(LIBRARIES.get(backend, backend))
        except ImportError:
            print(f"{backend:<10} not installed")
            continue
        old, new = [], []
        for _ in range(args.repeats):
            old.append(_time_stop(TeardownHandle, backend, args.workers))
            new.append(_time_stop(WorkerHandle, backend, args.workers))
        before, after = statistics.median(old), statistics.median(new)
        print(f"{backend:<10} {before * 1e3:>8.0f} ms {after * 1e3:>8.0f} ms "
              f"{before / max(after, 1e-9):>6.0f}x")


if __name__ == "__main__":
    main()
