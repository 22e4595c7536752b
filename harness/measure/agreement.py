"""Step 3 of a cell: does the backend's S agree with the float64 reference? Checked before timing.

Entries of S can cancel to near zero, so an error relative to |S_ij| would flag correct results.
The error is measured against the scale of the terms that were summed instead:

    err_ij = |S_ij − ref_ij| / (‖q_i‖ · ‖k_j‖)

The bound is ``u · (8 + sqrt(d_k))`` for the unit roundoff u of the precision the cell claims.
Why that shape: rounding the inputs and the product costs a few u whatever d_k is (at most about
3u for d_k = 1), and accumulation error on zero-mean data grows like sqrt(d_k) — the worst-case
d_k·u bound is so loose that at d_k = 4096 it would let TF32 pass for float32. Measured on
seeded normal inputs (probe in tests/test_agreement.py): float32 BLAS and float32 sequential
loops stay under 4u at every d_k from 1 to 4096, while a float32 product whose inputs were
rounded to TF32 errs by 360u at d_k = 4096 (bound 72u) and by over 3000u at d_k = 64 (bound 16u).

For float16 the scale is floored at the dtype's smallest normal number: a product that
underflows into subnormals loses relative precision for a reason that is not the backend's.
NaN or inf never passes.

Attention cells are compared row by row of S flattened to (B·H·n, m), each row against the
norms of its own query and of its key head's keys, times the 1/√d_k scale when the cell is
scaled (so the bound is the same relative one). Masked entries must be exactly −inf, and
are left out of the error figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qkbench.backends.base import Problem
from qkbench.measure.inputs import Reference

# Unit roundoff of the precision a cell computes in (half the distance from 1 to the next number).
UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "tf32": 2.0**-11,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}
# Smallest normal number per precision: below it, results lose relative precision legitimately.
SMALLEST_NORMAL = {
    "float64": 2.0**-1022,
    "float32": 2.0**-126,
    "tf32": 2.0**-126,
    "float16": 2.0**-14,
    "bfloat16": 2.0**-126,
}


def error_bound(d_k: int, precision: str) -> float:
    """Largest max-error a correct backend computing in `precision` may show (see module doc)."""
    return UNIT_ROUNDOFF[precision] * (8.0 + math.sqrt(d_k))


@dataclass(frozen=True)
class Agreement:
    """The verdict for one cell: error figures, the bound they were held to, and why it failed."""

    max_err: float
    mean_err: float
    bound: float
    checked_rows: int
    reason: str | None = None  # None when the output agrees
    # The share of checked entries outside the bound (non-finite ones count as outside): one
    # wrong entry (an edge case) reads differently from a wrong answer everywhere.
    outside_share: float = 0.0
    worst: tuple[int, int] | None = None  # (i, j) in S of the largest error (or first NaN)

    @property
    def passed(self) -> bool:
        return self.reason is None


def check_output(s: object, expected_shape: tuple[int, ...], dtype: str) -> str | None:
    """The reason an output is not even comparable (not an array, wrong shape or dtype)."""
    if not isinstance(s, np.ndarray):
        return f"to_numpy returned {type(s).__name__}, not a numpy.ndarray"
    if s.shape != expected_shape:
        return f"output has shape {s.shape}, expected {expected_shape}"
    if s.dtype.name != dtype:  # bfloat16 arrays (ml_dtypes) are named "bfloat16" too
        # A float32 cell answered in float64 was probably computed in float64: not comparable.
        return f"output dtype is {s.dtype.name}, expected {dtype}"
    return None


def compare(s: np.ndarray, reference: Reference, precision: str) -> Agreement:
    """Compare the reference's rows of S with their float64 values."""
    rows = reference.rows
    problem = reference.problem
    d_k_bound = error_bound(reference.d_k, precision)
    flat = s if s.ndim == 2 else s.reshape(-1, s.shape[-1])
    picked = np.asarray(flat[rows], dtype=np.float64)
    k_norms = reference.k_norms
    k_norms = k_norms[None, :] if k_norms.ndim == 1 else k_norms[reference.key_rows(rows)]
    factor = problem.scale if problem is not None else 1.0
    scale = np.maximum(reference.q_norms[rows][:, None] * k_norms * factor,
                       SMALLEST_NORMAL[precision])
    masked = reference.masked(rows)
    if masked is not None:
        wrong = masked & (picked != -np.inf)
        if wrong.any():
            i, j = np.argwhere(wrong)[0]
            return Agreement(math.nan, math.nan, d_k_bound, len(rows),
                             f"{int(wrong.sum())} masked entries are not -inf (first at "
                             f"S{_where(int(rows[i]), int(j), problem)}: {picked[i, j]!r})",
                             outside_share=int(wrong.sum()) / wrong.size,
                             worst=(int(rows[i]), int(j)))
        picked = np.where(masked, 0.0, picked)  # masked entries are checked; leave them out
        expected = np.where(masked, 0.0, reference.values)
    else:
        expected = reference.values
    finite = np.isfinite(picked)
    if not np.all(finite):
        bad = int(np.count_nonzero(~finite))
        i, j = np.unravel_index(int(np.argmin(finite)), finite.shape)
        return Agreement(math.nan, math.nan, d_k_bound, len(rows),
                         f"NaN/Inf: {bad} non-finite entries in the output "
                         f"(first at S{_where(int(rows[i]), int(j), problem)})",
                         outside_share=bad / finite.size, worst=(int(rows[i]), int(j)))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(picked - expected) / scale
    entries = int(np.count_nonzero(~masked)) if masked is not None else err.size
    mean_err = float(err.sum() / entries) if entries else 0.0
    max_err = float(err.max(initial=0.0))
    outside = int(np.count_nonzero(err > d_k_bound))  # a masked entry's error is 0
    share = outside / entries if entries else 0.0
    worst = None
    if err.size:
        i, j = np.unravel_index(int(np.argmax(err)), err.shape)
        worst = (int(rows[i]), int(j))
    reason = None
    if max_err > d_k_bound:
        reason = (f"max error {max_err:.3g} exceeds the {precision} bound {d_k_bound:.3g} "
                  f"in {outside} of {entries} entries ({100 * share:.3g}%; worst at "
                  f"S{_where(worst[0], worst[1], problem)})")
    return Agreement(max_err, mean_err, d_k_bound, len(rows), reason, share, worst)


def _where(row: int, column: int, problem: Problem | None) -> str:
    """An entry of S by its indices: [i, j], or [b, h, i, j] for an attention cell."""
    if problem is None or problem.plain:
        return f"[{row}, {column}]"
    batch_head, i = divmod(row, problem.n)
    b, h = divmod(batch_head, problem.heads)
    return f"[{b}, {h}, {i}, {column}]"

