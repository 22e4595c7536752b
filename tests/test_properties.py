"""Property tests over the sweep space: at random points of n, m (n < m, n = m, n > m), d_k,
batch, heads, kv_heads dividing heads, causal, scaled and dtype, every built-in CPU backend
is `ok` against the float64 reference, a row's flops and bytes are what the definition in
docs/attention.md counts, and deliberately wrong backends are `mismatch` exactly where their
flaw changes S.

Each point goes through the worker's own code, in this process: the shape's inputs and
reference built and saved as the runner builds them, then the session's `setup` (load, cast,
prepare, first call, agreement against every reference row) and, after two timed samples,
`verify` as a cell's second worker runs it (the timed call's answer against a random share of
the rows — the subset that once lost the causal mask). One session per backend serves every
point, as one worker serves every cell of a run, so a point costs milliseconds, not a process.

The number of points is the Hypothesis profile's (tests/conftest.py): `ci` by default,
`QKBENCH_HYPOTHESIS_PROFILE=nightly` for ten times as many, drawn afresh.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from qkbench.backends.registry import BUILTINS, load_class
from qkbench.measure import inputs
from qkbench.measure.cell import CellFailure, CellPlan
from qkbench.measure.session import Session
from qkbench.plan.sweep import Cell, Shape, Variant
from qkbench.records.results import summary_row
from tests.plugins.wrong_attention import WRONG

BUILTIN_CPU = ("numpy", "numba", "numba-loops", "torch-cpu")
DTYPES = ("float32", "float64", "float16", "bfloat16")
# Bytes per element, from the dtypes' definitions (not from the harness's table).
ELEMENT_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
SEED_LIMIT = 2**16
FULL_REFERENCE = 1 << 24  # the config's default max_reference_elements: every row here

# ------------------------------------------------------------------ the space


# How n compares with m, and whether the mask is on: five kinds of point drawn alike.
RELATIONS = (("n<m", False), ("n=m", False), ("n>m", False), ("n<m", True), ("n=m", True))


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    """A point of the sweep space. n > m only without the mask: the config refuses causal
    cells with n > m (docs/attention.md)."""
    relation, causal = draw(st.sampled_from(RELATIONS))
    a, b = draw(st.integers(1, 40)), draw(st.integers(1, 96))
    n, m = {"n<m": (a, a + b), "n=m": (a, a), "n>m": (a + b, a)}[relation]
    # kv_heads and the group size drawn apart: heads is their product, so every kv_heads
    # divides it, and grouped heads (1 < kv_heads < heads) are as common as the extremes.
    kv_heads, group = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    heads = kv_heads * group
    d_k = draw(st.one_of(st.integers(1, 20), st.sampled_from((31, 64, 100, 128))))
    shape = Shape(n, m, d_k, batch=draw(st.integers(1, 3)), heads=heads, kv_heads=kv_heads,
                  causal=causal, scaled=draw(st.booleans()))
    event(relation + (", causal" if causal else ""))
    event("plain 2-D product" if shape.problem().plain else "attention cell")
    return shape


# ------------------------------------------------------------------ counts by hand


def unmasked_entries(n: int, m: int, causal: bool) -> int:
    """Entries of one head's n × m block that are not masked, counted one by one: key j is
    masked for query i when j > i + (m − n)."""
    return sum(1 for i in range(n) for j in range(m) if not (causal and j > i + (m - n)))


def expected_flops(shape: Shape) -> int:
    """2·d_k per unmasked entry (a multiply and an add per term), every batch and query head."""
    return 2 * shape.d_k * shape.batch * shape.heads * unmasked_entries(shape.n, shape.m,
                                                                       shape.causal)


def expected_bytes(shape: Shape, dtype: str) -> int:
    """Q once, K once per key head (its query heads share it), S written once (−inf too)."""
    q = shape.batch * shape.heads * shape.n * shape.d_k
    k = shape.batch * shape.kv_heads * shape.m * shape.d_k
    s = shape.batch * shape.heads * shape.n * shape.m
    return (q + k + s) * ELEMENT_BYTES[dtype]


def test_the_counts_by_hand_agree_with_the_documented_examples():
    # docs/attention.md: causal n = m counts n(n + 1)/2 entries; n = 3, m = 5 sees 3 + 4 + 5.
    assert unmasked_entries(4, 4, causal=True) == 10
    assert unmasked_entries(3, 5, causal=True) == 12
    assert unmasked_entries(3, 5, causal=False) == 15
    assert expected_bytes(Shape(16, 64, 8, batch=2, heads=8, kv_heads=2), "float32") == \
        4 * (2 * 8 * 16 * 8 + 2 * 2 * 64 * 8 + 2 * 8 * 16 * 64)


# ------------------------------------------------------------------ one cell, as a worker runs it


class Cells:
    """One worker session per backend, and a fresh scratch folder per point."""

    def __init__(self, scratch: Path) -> None:
        self.scratch, self.sessions = scratch, {}
        self.numbers = itertools.count()

    def session(self, path: str) -> Session:
        if path not in self.sessions:
            self.sessions[path] = Session(path, {})
        return self.sessions[path]

    def inputs(self, shape: Shape, seed: int, max_reference_elements: int) -> Path:
        """The shape's inputs and reference as the runner saves them for its workers."""
        folder = self.scratch / f"{next(self.numbers)}-{shape.folder_name()}"
        built = inputs.build(shape.n, shape.m, shape.d_k, seed, max_reference_elements,
                             shape.problem(), inputs.TIMED)
        inputs.save(built, folder)
        return folder

    def outcome(self, path: str, folder: Path, dtype: str) -> tuple[str, str, dict[str, Any]]:
        """(status, reason, figures) of one cell: the first worker's setup, two timed samples,
        then the checks a second worker of the cell runs (`verify(False)`)."""
        session = self.session(path)
        plan = CellPlan(dtype=dtype, min_sample_s=1e-4, warmup_s=0.0)
        try:
            figures = session.setup(str(folder), plan, True)
            session.sample(2, 0)
            figures.merge(session.handle(("verify", False)))
            return "ok", "", figures
        except CellFailure as failure:
            return failure.status, failure.reason, failure.details
        finally:
            session.release()


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Cells:
    return Cells(tmp_path_factory.mktemp("points"))


def available_builtins() -> list[str]:
    """The built-in CPU backends this machine has (a missing library is a skipped cell)."""
    return [name for name in BUILTIN_CPU if load_class(BUILTINS[name])().unavailable() is None]


AVAILABLE = available_builtins()


# ------------------------------------------------------------------ the properties


@given(shape=shapes(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, SEED_LIMIT),
       sampled_rows=st.booleans())
def test_builtin_cpu_backends_are_ok_and_count_flops_and_bytes(cells, shape, dtype, seed,
                                                               sampled_rows):
    rows = shape.batch * shape.heads * shape.n
    # A reference of about a third of S's rows, as a cell too large for a full one gets.
    limit = max(shape.m, shape.m * rows // 3) if sampled_rows else FULL_REFERENCE
    event("sampled reference rows" if limit < rows * shape.m else "every reference row")
    event("more rows than a second worker checks" if rows > 256 else "rows ≤ 256")
    folder = cells.inputs(shape, seed, limit)
    try:
        for name in AVAILABLE:
            cls = load_class(BUILTINS[name])
            if dtype not in cls.dtypes:
                continue  # the runner records such a cell as skipped, never runs it
            cell = Cell.of(name, shape, Variant(dtype))
            status, reason, figures = cells.outcome(BUILTINS[name], folder, dtype)
            row = summary_row(cell, cls.device, status, reason, figures)
            assert row["status"] == "ok", f"{name} {dtype} {shape}: {reason}"
            assert row["flops"] == expected_flops(shape), name
            assert row["bytes"] == expected_bytes(shape, dtype), name
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@given(shape=shapes(), dtype=st.sampled_from(("float32", "float64")),
       seed=st.integers(0, SEED_LIMIT))
def test_wrong_backends_are_mismatch_exactly_where_their_flaw_changes_s(cells, shape, dtype,
                                                                         seed):
    # Every row checked: a flaw in rows a sampled reference leaves out is not there to find.
    folder = cells.inputs(shape, seed, FULL_REFERENCE)
    problem = shape.problem()
    try:
        for wrong in WRONG:
            differs = wrong.differs(problem)
            event(f"{wrong.name}: {'differs' if differs else 'same S'}")
            status, reason, _ = cells.outcome(f"{wrong.__module__}:{wrong.__name__}", folder,
                                              dtype)
            expected = "mismatch" if differs else "ok"
            assert status == expected, f"{wrong.name} {dtype} {shape}: {status} {reason}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_every_required_builtin_is_available_or_its_absence_is_said():
    # Not a silent pass: a machine without numba or torch runs the properties on fewer
    # backends, and this says which.
    missing = sorted(set(BUILTIN_CPU) - set(AVAILABLE))
    if missing:
        pytest.skip(f"not installed here: {', '.join(missing)}")
    assert AVAILABLE == list(BUILTIN_CPU)
