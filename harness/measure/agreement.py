"""Does the backend's S agree with the float64 reference? Checked before timing.

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


# Rows are compared in slices of about this many entries: the few float64 temporaries of a slice
# (256 KiB each) stay in any core's L2 (256 KiB to 2 MiB on the x86 and Arm cores of the last
# decade), where the whole of a 2048 x 2048 S would stream each temporary through memory (on
# the 2-vCPU Zen 3 VM: 91 ms for a whole 2048 x 2048 float32 S, against a 17 ms product).
SLICE_ENTRIES = 1 << 15


@dataclass
class _Tally:
    """The error figures of some rows of S, to be added up over the slices of a check."""

    err_sum: float = 0.0
    max_err: float = 0.0
    worst: tuple[int, int] | None = None
    outside: int = 0
    entries: int = 0

    def add(self, other: _Tally) -> None:
        self.err_sum += other.err_sum
        self.outside += other.outside
        self.entries += other.entries
        if other.worst is not None and (self.worst is None or other.max_err > self.max_err):
            self.max_err, self.worst = other.max_err, other.worst


def compare(s: np.ndarray, reference: Reference, precision: str) -> Agreement:
    """Compare the reference's rows of S with their float64 values, slice by slice."""
    rows = reference.rows
    flat = s if s.ndim == 2 else s.reshape(-1, s.shape[-1])
    step = max(1, SLICE_ENTRIES // max(flat.shape[-1], 1))
    tally = _Tally()
    for start in range(0, len(rows), step):
        part = _rows_tally(flat, slice(start, start + step), reference, precision)
        if isinstance(part, Agreement):
            # A masked entry that is not -inf, or NaN: the report counts them over every row.
            whole = _rows_tally(flat, slice(0, len(rows)), reference, precision)
            assert isinstance(whole, Agreement)
            return whole
        tally.add(part)
    bound = error_bound(reference.d_k, precision)
    mean_err = tally.err_sum / tally.entries if tally.entries else 0.0
    share = tally.outside / tally.entries if tally.entries else 0.0
    reason = None
    if tally.max_err > bound:
        assert tally.worst is not None
        reason = (f"max error {tally.max_err:.3g} exceeds the {precision} bound {bound:.3g} "
                  f"in {tally.outside} of {tally.entries} entries ({100 * share:.3g}%; worst "
                  f"at S{_where(tally.worst[0], tally.worst[1], reference.problem)})")
    return Agreement(tally.max_err, mean_err, bound, len(rows), reason, share, tally.worst)


def _rows_tally(flat: np.ndarray, part: slice, reference: Reference, precision: str
                ) -> _Tally | Agreement:
    """The error figures of a slice of the reference's rows of S (flattened), or the failed
    Agreement when a masked entry is not −inf or an entry is not finite."""
    problem = reference.problem
    d_k_bound = error_bound(reference.d_k, precision)
    rows, values = reference.rows[part], reference.values[part]
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):  # sorted: a range
        picked = np.asarray(flat[int(rows[0]):int(rows[-1]) + 1], dtype=np.float64)
    else:
        picked = np.asarray(flat[rows], dtype=np.float64)
    k_norms = reference.k_norms
    k_norms = k_norms[None, :] if k_norms.ndim == 1 else k_norms[reference.key_rows(rows)]
    factor = problem.scale if problem is not None else 1.0
    row_scale = reference.q_norms[rows][:, None] * factor
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
        values = np.where(masked, 0.0, values)
    finite = np.isfinite(picked)
    if not np.all(finite):
        bad = int(np.count_nonzero(~finite))
        i, j = np.unravel_index(int(np.argmin(finite)), finite.shape)
        return Agreement(math.nan, math.nan, d_k_bound, len(rows),
                         f"NaN/Inf: {bad} non-finite entries in the output "
                         f"(first at S{_where(int(rows[i]), int(j), problem)})",
                         outside_share=bad / finite.size, worst=(int(rows[i]), int(j)))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.subtract(picked, values)
        np.abs(err, out=err)
        if row_scale.min(initial=np.inf) * k_norms.min(initial=np.inf) >= SMALLEST_NORMAL[
                precision]:
            err /= row_scale  # the scale ‖q_i‖·‖k_j‖ as two divisions: no outer product
            err /= k_norms
        else:
            err /= np.maximum(row_scale * k_norms, SMALLEST_NORMAL[precision])
    tally = _Tally(err_sum=float(err.sum()),
                   entries=int(np.count_nonzero(~masked)) if masked is not None else err.size)
    if err.size:
        i, j = np.unravel_index(int(np.argmax(err)), err.shape)
        tally.max_err, tally.worst = float(err[i, j]), (int(rows[i]), int(j))
        if tally.max_err > d_k_bound:  # else none is outside (a masked entry's error is 0)
            tally.outside = int(np.count_nonzero(err > d_k_bound))
    return tally


def _where(row: int, column: int, problem: Problem | None) -> str:
    """An entry of S by its indices: [i, j], or [b, h, i, j] for an attention cell."""
    if problem is None or problem.plain:
        return f"[{row}, {column}]"
    batch_head, i = divmod(row, problem.n)
    b, h = divmod(batch_head, problem.heads)
    return f"[{b}, {h}, {i}, {column}]"

