"""The inputs of a shape (seeded, float64 master) and the float64 reference S.

Every backend and dtype of a shape sees the same values: one float64 master pair (Q, K) is drawn
per (n, m, d_k, batch, heads, kv_heads, seed) and cast per dtype, and the reference is computed once from the master and
reused. Inputs are standard normal: never zeros (which hide unwritten outputs and wrong indexing)
and zero-mean, so entries of S cancel as real attention scores do.

The main process writes a shape's arrays once into a scratch folder as .npy files; each worker
process maps them read-only, so a shape costs one reference computation however many backends
and dtypes use it. A second, independently seeded set (`FRESH`, in a subfolder) is built the
same way: after timing, each backend must also get it right, so a remembered answer fails.

Attention shapes (see `qkbench.backends.base.Problem`) have Q (B, H, n, d_k) and K
(B, H_kv, m, d_k); the reference then covers rows of S flattened to (B·H·n, m), so a sampled
row is a seeded (batch, head, query) triple, and it holds the mask (−inf) and the 1/√d_k scale.
The plain 2-D shape keeps the arrays, the seeds and the row sample it always had.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from qkbench.backends.base import KNOWN_DTYPES, Problem

_FILES = ("q", "k", "rows", "values", "q_norms", "k_norms")


@dataclass(frozen=True)
class Reference:
    """float64 S for a seeded subset of rows (all rows when the cell is small enough)."""

    rows: np.ndarray  # indices into S's rows (flattened to B·H·n for attention), sorted
    values: np.ndarray  # float64 S[rows, :] from the float64 master inputs; −inf where masked
    q_norms: np.ndarray  # ‖q_i‖ for every row of Q, flattened like S's rows (float64)
    k_norms: np.ndarray  # ‖k_j‖: (m,) for the plain product, (B·H_kv, m) for attention
    d_k: int  # the error bound grows with it
    problem: Problem | None = None  # None: the plain 2-D product

    def key_rows(self, rows: np.ndarray) -> np.ndarray:
        """For flattened rows of S, the index of the (batch, key head) each one reads."""
        p = self.problem
        if p is None or p.plain:
            return np.zeros(len(rows), dtype=np.intp)
        batch_head = rows // p.n
        return (batch_head // p.heads) * p.kv_heads + (batch_head % p.heads) // p.group

    def subset(self, picked: np.ndarray) -> Reference:
        """The same reference held to fewer of its rows (`picked` indexes `rows`). Everything
        but the rows travels along: a subset that lost `problem` would read an attention S as
        a plain one, its masked −inf entries as non-finite output."""
        return replace(self, rows=self.rows[picked], values=self.values[picked])

    def masked(self, rows: np.ndarray) -> np.ndarray | None:
        """(len(rows), m) booleans, True where S[row, j] is masked; None when nothing is."""
        p = self.problem
        if p is None or not p.causal:
            return None
        query = (rows % p.n)[:, None]
        return np.arange(p.m)[None, :] > query + p.offset


@dataclass(frozen=True)
class ShapeInputs:
    """The master inputs of one shape and their reference."""

    q: np.ndarray  # n × d_k, float64
    k: np.ndarray  # m × d_k, float64
    reference: Reference


# The input sets of a shape. "timed" is what every backend is timed on; "fresh" is a second,
# independent set of the same shape that each backend computes once after timing (see
# docs/correctness.md): an answer remembered from the timed inputs cannot agree with it.
TIMED, FRESH = "timed", "fresh"
# Each set draws from its own SeedSequence stream: the timed set keeps the spawn key it always
# had (its values are those of earlier runs), the fresh one appends this stream number.
_STREAMS = {TIMED: (), FRESH: (1,)}


def _heads_key(problem: Problem | None) -> tuple[int, ...]:
    # The plain product keeps the seed stream it always had, so older runs' inputs stay valid.
    if problem is None or problem.plain:
        return ()
    return (problem.batch, problem.heads, problem.kv_heads)


def master_inputs(n: int, m: int, d_k: int, seed: int, problem: Problem | None = None,
                  which: str = TIMED) -> tuple[np.ndarray, np.ndarray]:
    """Seeded float64 Q and K; a different shape or set gets an independent stream, not a
    slice. Causal and scaled cells of one shape share their inputs: they differ only in the
    output."""
    key = (n, m, d_k) + _heads_key(problem) + _STREAMS[which]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    if problem is None:
        problem = Problem(n, m, d_k)
    return rng.standard_normal(problem.q_shape()), rng.standard_normal(problem.k_shape())


def reference_rows(n: int, m: int, seed: int, max_elements: int,
                   problem: Problem | None = None, which: str = TIMED) -> np.ndarray:
    """All rows of S (B·H·n of them) when they fit in `max_elements` entries, else a seeded
    sample of rows that does."""
    total = n if problem is None else problem.batch * problem.heads * n
    if total * m <= max_elements:
        return np.arange(total)
    count = max(1, max_elements // m)
    spawn_key = (n, m, 1) + _heads_key(problem) + _STREAMS[which]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))
    return np.sort(rng.choice(total, size=count, replace=False))


def build(n: int, m: int, d_k: int, seed: int, max_reference_elements: int,
          problem: Problem | None = None, which: str = TIMED) -> ShapeInputs:
    """The shape's master inputs and reference (set `which`); `problem` for an attention
    shape."""
    if problem is not None and problem.plain:
        problem = None
    q, k = master_inputs(n, m, d_k, seed, problem, which)
    rows = reference_rows(n, m, seed, max_reference_elements, problem, which)
    if problem is None:
        reference = Reference(rows=rows, values=q[rows] @ k.T,
                              q_norms=np.linalg.norm(q, axis=1),
                              k_norms=np.linalg.norm(k, axis=1), d_k=d_k)
        return ShapeInputs(q=q, k=k, reference=reference)
    q_rows, k_heads = q.reshape(-1, d_k), k.reshape(-1, m, d_k)
    reference = Reference(rows=rows, values=np.empty((len(rows), m)),
                          q_norms=np.linalg.norm(q_rows, axis=1),
                          k_norms=np.linalg.norm(k_heads, axis=2), d_k=d_k, problem=problem)
    # One product per key head: the rows of all the query heads that share it, no repeated K.
    key_rows = reference.key_rows(rows)
    for key_row in np.unique(key_rows):
        picked = np.nonzero(key_rows == key_row)[0]
        reference.values[picked] = q_rows[rows[picked]] @ k_heads[key_row].T
    values = reference.values
    if problem.scaled:
        values *= problem.scale
    masked = reference.masked(rows)
    if masked is not None:
        values[masked] = -np.inf
    return ShapeInputs(q=q, k=k, reference=reference)


def save(inputs: ShapeInputs, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ref = inputs.reference
    arrays = {"q": inputs.q, "k": inputs.k, "rows": ref.rows, "values": ref.values,
              "q_norms": ref.q_norms, "k_norms": ref.k_norms}
    for name in _FILES:
        np.save(folder / f"{name}.npy", arrays[name])
    if ref.problem is not None:
        (folder / "problem.json").write_text(json.dumps(asdict(ref.problem)))


def fresh_folder(folder: Path) -> Path:
    """Where a shape's fresh input set lives, beside its timed one."""
    return folder / FRESH


def load(folder: Path) -> ShapeInputs:
    """Map a saved shape read-only: workers share the pages instead of copying them."""
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _FILES}
    problem_file = folder / "problem.json"
    problem = Problem(**json.loads(problem_file.read_text())) if problem_file.exists() else None
    reference = Reference(rows=np.asarray(arrays["rows"]), values=arrays["values"],
                          q_norms=np.asarray(arrays["q_norms"]),
                          k_norms=np.asarray(arrays["k_norms"]), d_k=arrays["q"].shape[-1],
                          problem=problem)
    return ShapeInputs(q=arrays["q"], k=arrays["k"], reference=reference)


def cast(x: np.ndarray, dtype: str) -> np.ndarray:
    """The master array in a cell's dtype, as a fresh C-contiguous host array."""
    if dtype not in KNOWN_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}")
    if dtype == "bfloat16":
        import ml_dtypes  # NumPy has no bfloat16; ml_dtypes provides it (torch extra)

        return np.array(x, dtype=ml_dtypes.bfloat16, order="C")
    # Always a writable copy: the master may be a read-only memory map, and a backend is
    # free to write to its inputs.
    return np.array(x, dtype=np.dtype(dtype), order="C")
