"""Step 1: a validated Config → the list of cells to run, in the order they run.

A cell is one backend × one shape (n, m, d_k) × one dtype × one phase × one cache state × one
thread count. Cells are ordered shape-major; all backends of one (shape, dtype, phase, cache,
threads) group run back to back, which is what lets the timing step interleave their samples
and lets one reference serve the whole shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from qkbench.plan.config import Config


@dataclass(frozen=True, order=True)
class Shape:
    n: int
    m: int
    d_k: int

    @property
    def flops(self) -> int:
        return 2 * self.n * self.m * self.d_k


@dataclass(frozen=True)
class Variant:
    """Everything about a cell except the backend and the shape: one interleaving group."""

    dtype: str
    phase: str = "kernel"
    cache: str = "warm"
    threads: int | None = None  # None: the library's default


@dataclass(frozen=True)
class Cell:
    backend: str  # the backend's label
    shape: Shape
    variant: Variant

    @property
    def dtype(self) -> str:
        return self.variant.dtype

    def key(self) -> dict[str, object]:
        """The columns that identify this cell in every table (see results.CELL_KEY)."""
        return {"backend": self.backend, "dtype": self.variant.dtype, "n": self.shape.n,
                "m": self.shape.m, "d_k": self.shape.d_k, "phase": self.variant.phase,
                "cache": self.variant.cache, "threads_requested": self.variant.threads}


def shapes(config: Config) -> list[Shape]:
    sweep = config.sweep
    ns, d_ks = sweep.sizes("n"), sweep.sizes("d_k")
    if sweep.m is None:
        pairs = [(n, n) for n in ns]
    else:
        pairs = list(product(ns, sweep.sizes("m")))
    return [Shape(n, m, d_k) for (n, m), d_k in product(pairs, d_ks)]


def variants(config: Config) -> list[Variant]:
    sweep = config.sweep
    return [Variant(dtype, phase, cache, threads)
            for dtype, phase, cache, threads in product(sweep.dtype, sweep.phase, sweep.cache,
                                                        sweep.threads or [None])]


@dataclass(frozen=True)
class Shard:
    """Part `index` (1-based) of `count`: a deterministic 1/count of a sweep's groups."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'I/N' with 1 ≤ I ≤ N, else ValueError with a message fit for the user."""
        index, _, count = text.partition("/")
        if not (index.strip().isdigit() and count.strip().isdigit()):
            raise ValueError(f"--shard must look like I/N (for example 2/8), got {text!r}")
        shard = cls(int(index), int(count))
        if not 1 <= shard.index <= shard.count:
            raise ValueError(f"--shard {text}: I must be between 1 and N")
        return shard

    def takes(self, group_number: int) -> bool:
        # Round-robin over groups rather than contiguous slices, so every shard gets a mix of
        # small and large shapes and shards finish at about the same time. Whole groups, so
        # the backends of a group are still interleaved.
        return group_number % self.count == self.index - 1


def groups(config: Config, backend_labels: list[str], shard: Shard | None = None
           ) -> list[tuple[Shape, list[list[Cell]]]]:
    """Per shape, its interleaving groups (each one the cells of one variant, every backend);
    with a shard, only the groups that shard takes. Shapes left without groups are dropped."""
    shard = shard or Shard()
    out, number = [], 0
    for shape in shapes(config):
        taken = []
        for variant in variants(config):
            if shard.takes(number):
                taken.append([Cell(label, shape, variant) for label in backend_labels])
            number += 1
        if taken:
            out.append((shape, taken))
    return out


def expand(config: Config, backend_labels: list[str], shard: Shard | None = None) -> list[Cell]:
    return [cell for _, shape_groups in groups(config, backend_labels, shard)
            for group in shape_groups for cell in group]
