"""The agreement check: correct float32/float64 results pass, every kind of wrong one fails."""

import math

import numpy as np
import pytest

from qkbench.measure import inputs
from qkbench.measure.agreement import check_output, compare, error_bound
from tests.plugins.misbehaving import round_to_tf32


def shape_inputs(n, m, d_k, seed=0):
    return inputs.build(n, m, d_k, seed, max_reference_elements=1 << 24)


def f32(x):
    return inputs.cast(x, "float32")


def sequential_float32_loops(q, k):
    """The textbook loop order, accumulating in float32 (what numba-loops does)."""
    s = np.zeros((q.shape[0], k.shape[0]), dtype=np.float32)
    for t in range(q.shape[1]):
        s += np.outer(q[:, t], k[:, t]).astype(np.float32)
    return s


@pytest.mark.parametrize("d_k", [1, 2, 8, 64, 128, 512])
def test_float32_blas_passes(d_k):
    shape = shape_inputs(200, 150, d_k)
    s = f32(shape.q) @ f32(shape.k).T
    assert compare(s, shape.reference, "float32").passed


@pytest.mark.parametrize("d_k", [1, 8, 64, 512])
def test_float32_sequential_loops_pass(d_k):
    shape = shape_inputs(64, 48, d_k)
    assert compare(sequential_float32_loops(f32(shape.q), f32(shape.k)),
                   shape.reference, "float32").passed


@pytest.mark.parametrize("d_k", [1, 16, 256])
def test_float64_blas_passes_at_float64_precision(d_k):
    shape = shape_inputs(100, 80, d_k)
    # a different summation order than the reference's BLAS call: row by row, in pairs
    s = np.array([[math.fsum(a * b for a, b in zip(qi, kj)) for kj in shape.k[:20]]
                  for qi in shape.q])
    ref = inputs.Reference(shape.reference.rows, shape.reference.values[:, :20],
                           shape.reference.q_norms, shape.reference.k_norms[:20], d_k)
    assert compare(s, ref, "float64").passed


@pytest.mark.parametrize("d_k", [1, 64])
def test_float16_passes_even_where_products_underflow(d_k):
    shape = shape_inputs(128, 128, d_k)
    q16, k16 = inputs.cast(shape.q, "float16"), inputs.cast(shape.k, "float16")
    s = (q16.astype(np.float32) @ k16.astype(np.float32).T).astype(np.float16)
    assert compare(s, shape.reference, "float16").passed


@pytest.mark.parametrize("d_k", [1, 8, 64, 512, 4096])
def test_float32_computed_from_tf32_rounded_inputs_fails(d_k):
    n = 256 if d_k < 4096 else 64
    shape = shape_inputs(n, n, d_k)
    s = round_to_tf32(f32(shape.q)) @ round_to_tf32(f32(shape.k)).T
    verdict = compare(s, shape.reference, "float32")
    assert not verdict.passed
    assert "exceeds the float32 bound" in verdict.reason
    # ... while the same numbers are fine when the row honestly says it used TF32
    assert compare(s, shape.reference, "tf32").passed


def test_output_off_by_a_small_constant_fails():
    shape = shape_inputs(128, 128, 64)
    s = f32(shape.q) @ f32(shape.k).T
    typical = float(np.median(np.abs(s)))
    assert not compare(s + np.float32(1e-4 * typical), shape.reference, "float32").passed


def test_a_single_nan_fails():
    shape = shape_inputs(64, 64, 32)
    s = f32(shape.q) @ f32(shape.k).T
    s[10, 20] = np.nan
    verdict = compare(s, shape.reference, "float32")
    assert not verdict.passed and "non-finite" in verdict.reason
    assert math.isnan(verdict.max_err)


def test_infinity_fails():
    shape = shape_inputs(16, 16, 8)
    s = f32(shape.q) @ f32(shape.k).T
    s[0, 0] = np.inf
    assert not compare(s, shape.reference, "float32").passed


@pytest.mark.parametrize("wrong", ["transposed", "rows_shifted", "q_times_q", "other_seed"])
def test_wrong_but_plausible_results_fail(wrong):
    shape = shape_inputs(96, 96, 64)
    q, k = f32(shape.q), f32(shape.k)
    s = {
        "transposed": lambda: (q @ k.T).T.copy(),
        "rows_shifted": lambda: np.roll(q @ k.T, 1, axis=0),
        "q_times_q": lambda: q @ q.T,
        "other_seed": lambda: f32(shape_inputs(96, 96, 64, seed=1).q) @ k.T,
    }[wrong]()
    verdict = compare(s, shape.reference, "float32")
    assert not verdict.passed
    assert verdict.max_err > 100 * verdict.bound


def test_bound_grows_with_d_k_and_unit_roundoff():
    assert error_bound(512, "float32") > error_bound(64, "float32")
    assert error_bound(64, "float16") == pytest.approx(error_bound(64, "float32") * 2**13)
    assert error_bound(64, "tf32") == error_bound(64, "float16")
    assert error_bound(64, "bfloat16") > error_bound(64, "float16")


def test_sampled_rows_still_catch_a_wrong_row():
    shape = inputs.build(400, 300, 16, seed=3, max_reference_elements=300 * 50)
    rows = shape.reference.rows
    assert len(rows) == 50 and np.all(np.diff(rows) > 0)
    s = f32(shape.q) @ f32(shape.k).T
    assert compare(s, shape.reference, "float32").passed
    s[rows[7]] *= 1.01
    assert not compare(s, shape.reference, "float32").passed


@pytest.mark.parametrize("output, problem", [
    ([[1.0]], "not a numpy.ndarray"),
    (np.zeros((3, 4), np.float32), "shape (3, 4), expected (4, 4)"),
    (np.zeros((4, 4), np.float64), "dtype is float64, expected float32"),
])
def test_outputs_that_are_not_comparable_are_named(output, problem):
    assert problem in check_output(output, (4, 4), "float32")


def test_inputs_are_seeded_random_and_independent_per_shape():
    a1, _ = inputs.master_inputs(8, 8, 4, seed=0)
    a2, _ = inputs.master_inputs(8, 8, 4, seed=0)
    b, _ = inputs.master_inputs(8, 8, 4, seed=1)
    assert np.array_equal(a1, a2) and not np.array_equal(a1, b)
    assert np.count_nonzero(a1) == a1.size
    c, _ = inputs.master_inputs(8, 9, 4, seed=0)
    assert not np.array_equal(a1, c)


def test_saved_inputs_round_trip_read_only_and_cast_copies(tmp_path):
    built = shape_inputs(20, 10, 4)
    inputs.save(built, tmp_path)
    loaded = inputs.load(tmp_path)
    assert np.array_equal(loaded.q, built.q) and np.array_equal(loaded.reference.values,
                                                               built.reference.values)
    cast = inputs.cast(loaded.q, "float64")
    assert cast.flags.writeable and cast.flags.c_contiguous
