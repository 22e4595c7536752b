"""Does qkbench time what the reference timers time? A side-by-side check of the timing core.

For each operation, rounds alternate between qkbench's timer (qkbench.measure.kernel_timer.KernelTimer, the
code that runs inside every worker), `timeit` and `torch.utils.benchmark` (when torch is
installed), so machine drift falls on all three alike. Each timer reports a median time per call
per round; the script prints the median over rounds of each timer's time and of the ratio
qkbench / reference.

Operations: the `numpy` backend's scores(q, k) at n = m = 1024, d_k = 64 (medium) and at
n = m = 16, d_k = 8 (tiny, where per-call overhead shows), plus a no-op callable, whose time
per call is the pure overhead of each timer's loop.

With `--gpu`, the GPU side instead: every GPU backend available here (torch-cuda, cupy,
triton) is timed by qkbench's device clock (CUDA events), cold (the L2 flushed before each
call, outside the events) against `triton.testing.do_bench`, which flushes and times each call
the same way, and warm against `cupyx.profiler.benchmark` (its GPU times) and
`torch.utils.benchmark` (host time around a synchronised call). `--csv PATH` writes every
round's figures; the exit code is 1 when a large cold cell's median is more than `--tolerance`
(5%) away from do_bench's.

    python benchmarks/validate_timers.py [--rounds 15]
    python benchmarks/validate_timers.py --gpu [--rounds 5] [--csv timers.csv]
"""

from __future__ import annotations

import argparse
import statistics
import timeit

import numpy as np

from qkbench.backends.numpy_backend import NumpyBackend
from qkbench.measure import inputs
from qkbench.measure.stats import median
from qkbench.measure.kernel_timer import KernelTimer


def qkbench_median(fn, q, k, samples: int = 30) -> float:
    timer = KernelTimer(fn, [(q, k)], lambda: None)
    calls, _ = timer.calibrate(min_sample_s=1e-3, warmup_s=0.02)
    return median([s.seconds for s in timer.samples(samples, calls, 0)])


def timeit_median(fn, q, k, repeat: int = 30) -> float:
    timer = timeit.Timer("fn(q, k)", globals={"fn": fn, "q": q, "k": k})
    number, _ = timer.autorange()  # calls per repeat so that one repeat lasts ≥ 0.2 s
    number = max(1, number // 10)  # ... then a tenth of that, to keep a round short
    return median([t / number for t in timer.repeat(repeat=repeat, number=number)])


def torch_median(fn, q, k) -> float | None:
    try:
        from torch.utils import benchmark
    except ImportError:
        return None
    timer = benchmark.Timer(stmt="fn(q, k)", globals={"fn": fn, "q": q, "k": k})
    return timer.blocked_autorange(min_run_time=0.2).median


def noop(q, k):
    return None


# Cells for the GPU comparison: large enough that 5% is far above event resolution (a few µs),
# and one launch-bound cell where the timers are expected to differ by their overheads.
GPU_CELLS = {"n=m=4096 d_k=128": (4096, 128), "n=m=8192 d_k=128": (8192, 128),
             "n=m=64 d_k=64": (64, 64)}
GPU_BACKENDS = ("torch-cuda", "cupy", "triton")
# Below this median the comparison with do_bench is reported but not judged: its per-call
# overheads differ from ours by a few microseconds.
JUDGED_FROM_S = 50e-6


def qkbench_gpu_median(backend, q, k, cold: bool, samples: int = 30) -> float:
    timer = KernelTimer(backend.scores, [(q, k)], backend.sync,
                        device_clock=backend.device_clock(), flush_between_calls=cold)
    calls, _ = timer.calibrate(min_sample_s=1e-3, warmup_s=0.05)
    return median([s.seconds for s in timer.samples(samples, calls, 0)])


def do_bench_median(backend, q, k) -> float | None:
    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    return do_bench(lambda: backend.scores(q, k), return_mode="median") / 1e3


def cupyx_median(backend, q, k) -> float | None:
    try:
        from cupyx.profiler import benchmark
    except ImportError:
        return None
    result = benchmark(backend.scores, (q, k), n_repeat=50, n_warmup=5)
    return float(np.median(result.gpu_times[0]))


def torch_gpu_median(backend, q, k) -> float | None:
    try:
        from torch.utils import benchmark
    except ImportError:
        return None

    def call() -> None:
        backend.scores(q, k)
        backend.sync()

    return benchmark.Timer(stmt="call()", globals={"call": call}).blocked_autorange(
        min_run_time=0.2).median


def gpu_main(args: argparse.Namespace) -> int:
    from qkbench.backends.registry import BUILTINS, load_class

    backends = {}
    for name in GPU_BACKENDS:
        backend = load_class(BUILTINS[name])()
        reason = backend.unavailable()
        if reason:
            print(f"{name}: skipped ({reason})")
        else:
            backends[name] = backend
    if not backends:
        print("no GPU backend available: nothing to validate")
        return 0
    rows = []
    for label, (n, d_k) in GPU_CELLS.items():
        shape = inputs.build(n, n, d_k, seed=0, max_reference_elements=1 << 20)
        for name, backend in backends.items():
            q, k = backend.prepare(inputs.cast(shape.q, "float16"), inputs.cast(shape.k, "float16"))
            for round_number in range(args.rounds):
                # One round: each timer in turn on the same arrays, so drift falls on all.
                figures = {"qkbench cold": qkbench_gpu_median(backend, q, k, cold=True),
                           "triton.testing.do_bench": do_bench_median(backend, q, k),
                           "qkbench warm": qkbench_gpu_median(backend, q, k, cold=False),
                           "cupyx.profiler.benchmark": cupyx_median(backend, q, k),
                           "torch.utils.benchmark": torch_gpu_median(backend, q, k)}
                rows += [{"cell": label, "backend": name, "round": round_number, "timer": timer,
                          "seconds": value} for timer, value in figures.items()
                         if value is not None]
            backend.cleanup()
    import pandas as pd

    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    medians = frame.groupby(["cell", "backend", "timer"], sort=False)["seconds"].median()
    failed = False
    print(f"{'cell':20s} {'backend':11s} {'timer':26s} {'median':>11s} {'vs qkbench':>10s}")
    for (cell, name, timer), value in medians.items():
        ours = medians[(cell, name, "qkbench warm" if "warm" in timer or timer in (
            "cupyx.profiler.benchmark", "torch.utils.benchmark") else "qkbench cold")]
        ratio = ours / value
        verdict = ""
        if timer == "triton.testing.do_bench" and ours >= JUDGED_FROM_S:
            ok = abs(ratio - 1.0) <= args.tolerance
            failed |= not ok
            verdict = "within" if ok else "OUTSIDE"
            verdict += f" {100 * args.tolerance:.0f}%"
        print(f"{cell:20s} {name:11s} {timer:26s} {1e6 * value:9.2f}µs {ratio:10.3f} {verdict}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--gpu", action="store_true", help="validate the GPU timers instead")
    parser.add_argument("--csv", help="write every round's figures here (with --gpu)")
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args()
    if args.gpu:
        return gpu_main(args)
    backend = NumpyBackend()
    operations = {}
    for label, (n, d_k) in {"medium n=m=1024 d_k=64": (1024, 64),
                            "tiny n=m=16 d_k=8": (16, 8)}.items():
        shape = inputs.build(n, n, d_k, seed=0, max_reference_elements=1 << 24)
        q, k = backend.prepare(inputs.cast(shape.q, "float32"), inputs.cast(shape.k, "float32"))
        operations[label] = (backend.scores, q, k)
    operations["no-op callable"] = (noop, None, None)

    timers = {"qkbench": qkbench_median, "timeit": timeit_median, "torch.utils.benchmark":
              torch_median}
    results: dict[str, dict[str, list[float]]] = {op: {t: [] for t in timers} for op in operations}
    for _ in range(args.rounds):
        for op, (fn, q, k) in operations.items():
            for name, measure in timers.items():
                value = measure(fn, q, k)
                if value is not None:
                    results[op][name].append(value)

    print(f"{'operation':24s} {'timer':22s} {'median/call':>12s} {'qkbench/ref':>12s} "
          f"{'qkbench−ref':>12s}")
    for op, by_timer in results.items():
        ours = by_timer["qkbench"]
        for name, values in by_timer.items():
            if not values:
                continue
            if name == "qkbench":
                ratio = difference = ""
            else:
                ratios = [a / b for a, b in zip(ours, values)]
                ratio = f"{statistics.median(ratios):.3f}"
                difference = f"{1e6 * statistics.median(np.subtract(ours, values)):+.3f} µs"
            print(f"{op:24s} {name:22s} {1e6 * statistics.median(values):10.3f} µs "
                  f"{ratio:>12s} {difference:>12s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
