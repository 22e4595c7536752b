"""Step 2: the inputs of a shape (seeded, float64 master) and the float64 reference S.

Every backend and dtype of a shape sees the same values: one float64 master pair (Q, K) is drawn
per (n, m, d_k, seed) and cast per dtype, and the reference is computed once from the master and
reused. Inputs are standard normal: never zeros (which hide unwritten outputs and wrong indexing)
and zero-mean, so entries of S cancel as real attention scores do.

The main process writes a shape's arrays once into a scratch folder as .npy files; each worker
process maps them read-only, so a shape costs one reference computation however many backends
and dtypes use it. A second, independently seeded set (`FRESH`, in a subfolder) is built the
same way: after timing, each backend must also get it right, so a remembered answer fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qkbench.backends.base import KNOWN_DTYPES

_FILES = ("q", "k", "rows", "values", "q_norms", "k_norms")


@dataclass(frozen=True)
class Reference:
    """float64 S for a seeded subset of rows (all rows when the cell is small enough)."""

    rows: np.ndarray  # indices into S's rows, sorted
    values: np.ndarray  # float64 S[rows, :], computed from the float64 master inputs
    q_norms: np.ndarray  # ‖q_i‖ for every row of Q (float64)
    k_norms: np.ndarray  # ‖k_j‖ for every row of K (float64)
    d_k: int  # the error bound grows with it


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


def master_inputs(n: int, m: int, d_k: int, seed: int,
                  which: str = TIMED) -> tuple[np.ndarray, np.ndarray]:
    """Seeded float64 Q and K; a different shape or set gets an independent stream, not a slice."""
    key = (n, m, d_k, *_STREAMS[which])
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    return rng.standard_normal((n, d_k)), rng.standard_normal((m, d_k))


def reference_rows(n: int, m: int, seed: int, max_elements: int,
                   which: str = TIMED) -> np.ndarray:
    """All rows when n·m fits in `max_elements`, else a seeded sample of rows that does."""
    if n * m <= max_elements:
        return np.arange(n)
    count = max(1, max_elements // m)
    key = (n, m, 1, *_STREAMS[which])
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    return np.sort(rng.choice(n, size=count, replace=False))


def build(n: int, m: int, d_k: int, seed: int, max_reference_elements: int,
          which: str = TIMED) -> ShapeInputs:
    q, k = master_inputs(n, m, d_k, seed, which)
    rows = reference_rows(n, m, seed, max_reference_elements, which)
    reference = Reference(rows=rows, values=q[rows] @ k.T,
                          q_norms=np.linalg.norm(q, axis=1), k_norms=np.linalg.norm(k, axis=1),
                          d_k=d_k)
    return ShapeInputs(q=q, k=k, reference=reference)


def save(inputs: ShapeInputs, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ref = inputs.reference
    arrays = {"q": inputs.q, "k": inputs.k, "rows": ref.rows, "values": ref.values,
              "q_norms": ref.q_norms, "k_norms": ref.k_norms}
    for name in _FILES:
        np.save(folder / f"{name}.npy", arrays[name])


def fresh_folder(folder: Path) -> Path:
    """Where a shape's fresh input set lives, beside its timed one."""
    return folder / FRESH


def load(folder: Path) -> ShapeInputs:
    """Map a saved shape read-only: workers share the pages instead of copying them."""
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _FILES}
    reference = Reference(rows=np.asarray(arrays["rows"]), values=arrays["values"],
                          q_norms=np.asarray(arrays["q_norms"]),
                          k_norms=np.asarray(arrays["k_norms"]), d_k=arrays["q"].shape[1])
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
