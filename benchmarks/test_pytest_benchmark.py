"""The built-in backends as pytest-benchmark tests: one timed, checked call per backend and shape.

For teams whose CI already tracks pytest-benchmark results (`--benchmark-autosave`,
`--benchmark-compare`, `--benchmark-compare-fail=median:10%`). The timed function returns S,
and the same test checks it against the float64 reference, so a number is never reported for
a wrong answer. `sync()` is inside the timed function, so an asynchronous (GPU) backend's
queued work is part of the time.

    python -m pytest benchmarks/test_pytest_benchmark.py --benchmark-only

Not collected by the project's plain `python -m pytest` (testpaths is ["tests"]), so unit
tests stay fast. Runs in this process, one backend after another: qkbench's worker isolation,
interleaving and stopping rule are not used here — `qkbench run` is the measurement of record.
"""

from __future__ import annotations

import pytest

from qkbench.backends.registry import BUILTINS, load_class
from qkbench.measure import agreement
from qkbench.measure import inputs

pytest.importorskip("pytest_benchmark")

SHAPES = [(256, 256, 64), (1024, 1024, 64)]
DTYPE = "float32"
SEED = 0


@pytest.fixture(scope="module")
def shape_inputs():
    """Inputs and reference per shape, built once for all backends."""
    built = {}

    def get(n, m, d_k):
        if (n, m, d_k) not in built:
            built[(n, m, d_k)] = inputs.build(n, m, d_k, SEED, 1 << 24)
        return built[(n, m, d_k)]
    return get


@pytest.mark.parametrize("n, m, d_k", SHAPES, ids=[f"n{n}-m{m}-dk{d}" for n, m, d in SHAPES])
@pytest.mark.parametrize("name", list(BUILTINS))
def test_scores(benchmark, shape_inputs, name, n, m, d_k):
    backend = load_class(BUILTINS[name])()
    reason = backend.unavailable()
    if reason:
        pytest.skip(f"{name}: {reason}")
    if DTYPE not in backend.dtypes:
        pytest.skip(f"{name} does not compute in {DTYPE}")
    built = shape_inputs(n, m, d_k)
    q, k = backend.prepare(inputs.cast(built.q, DTYPE), inputs.cast(built.k, DTYPE))

    def scores():
        s = backend.scores(q, k)
        backend.sync()  # the queued work belongs in the time
        return s

    scores()  # JIT compilation and lazy start-up stay out of the timed rounds
    benchmark.group = f"S=QK^T n={n} m={m} d_k={d_k} {DTYPE}"
    benchmark.extra_info.update(backend=name, device=backend.device, n=n, m=m, d_k=d_k,
                                dtype=DTYPE, flops=2 * n * m * d_k)
    result = benchmark(scores)

    s = backend.to_numpy(result)
    precision = backend.precision(DTYPE) if hasattr(backend, "precision") else DTYPE
    problem = agreement.check_output(s, (n, m), DTYPE)
    assert problem is None, problem
    verdict = agreement.compare(s, built.reference, precision)
    assert verdict.passed, verdict.reason
