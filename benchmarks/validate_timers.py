"""Does qkbench time what the reference timers time? A side-by-side check of the timing core.

For each operation, rounds alternate between qkbench's timer (qkbench.measure.timing.KernelTimer, the
code that runs inside every worker), `timeit` and `torch.utils.benchmark` (when torch is
installed), so machine drift falls on all three alike. Each timer reports a median time per call
per round; the script prints the median over rounds of each timer's time and of the ratio
qkbench / reference.

Operations: the `numpy` backend's scores(q, k) at n = m = 1024, d_k = 64 (medium) and at
n = m = 16, d_k = 8 (tiny, where per-call overhead shows), plus a no-op callable, whose time
per call is the pure overhead of each timer's loop.

    python benchmarks/validate_timers.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import timeit

import numpy as np

from qkbench.backends.numpy_backend import NumpyBackend
from qkbench.measure import inputs
from qkbench.measure.stats import median
from qkbench.measure.timing import KernelTimer


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
