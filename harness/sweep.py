"""Step 1: a validated Config → the list of cells to run, in the order they run.

A cell is one backend × one shape (n, m, d_k) × one dtype. Cells are ordered shape-major, then
dtype, then backend, so every backend of a (shape, dtype) group runs back to back: that is what
lets the timing step interleave their samples and lets one reference serve the whole shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product

from harness.config import Config


@dataclass(frozen=True, order=True)
class Shape:
    n: int
    m: int
    d_k: int

    @property
    def flops(self) -> int:
        return 2 * self.n * self.m * self.d_k


@dataclass(frozen=True)
class Cell:
    backend: str  # the backend's label
    shape: Shape
    dtype: str

    def key(self) -> dict[str, object]:
        """The columns that identify this cell in every table."""
        return {"backend": self.backend, "dtype": self.dtype, **asdict(self.shape)}


def shapes(config: Config) -> list[Shape]:
    sweep = config.sweep
    ns, d_ks = sweep.sizes("n"), sweep.sizes("d_k")
    if sweep.m is None:
        pairs = [(n, n) for n in ns]
    else:
        pairs = list(product(ns, sweep.sizes("m")))
    return [Shape(n, m, d_k) for (n, m), d_k in product(pairs, d_ks)]


def expand(config: Config, backend_labels: list[str]) -> list[Cell]:
    return [Cell(label, shape, dtype)
            for shape in shapes(config)
            for dtype in config.sweep.dtype
            for label in backend_labels]
