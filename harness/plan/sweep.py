"""Step 1: a validated Config → the list of cells to run, in the order they run.

A cell is one backend × one shape (n, m, d_k, and for attention cells batch, heads, kv_heads,
causal, scaled, preset) × one dtype × one phase × one cache state × one
thread count. Cells are ordered shape-major; all backends of one (shape, dtype, phase, cache,
threads) group run back to back, which is what lets the timing step interleave their samples
and lets one reference serve the whole shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from qkbench.backends.base import Problem
from qkbench.plan import presets
from qkbench.backends.registry import BackendSpec
from qkbench.plan.config import BackendEntry, Config


@dataclass(frozen=True, order=True)
class Shape:
    """What one reference serves; the attention fields default to the plain 2-D product."""

    n: int
    m: int
    d_k: int
    batch: int = 1
    heads: int = 1
    kv_heads: int = 1
    causal: bool = False
    scaled: bool = False
    preset: str = ""  # the model preset that set heads, kv_heads and d_k; "" for none

    def problem(self) -> Problem:
        """What a backend computes for this shape (the semantics live in `Problem`)."""
        return Problem(self.n, self.m, self.d_k, self.batch, self.heads, self.kv_heads,
                       self.causal, self.scaled)

    @property
    def flops(self) -> int:
        """2·d_k per unmasked entry of S, for every batch element and query head: the
        convention of FlashAttention's benchmarks (causal n = m counts about half)."""
        return 2 * self.batch * self.heads * self.d_k * self.problem().unmasked_per_head()

    @property
    def q_elements(self) -> int:
        return self.batch * self.heads * self.n * self.d_k

    @property
    def k_elements(self) -> int:
        """K once per key head: grouped query heads share it."""
        return self.batch * self.kv_heads * self.m * self.d_k

    @property
    def s_elements(self) -> int:
        return self.batch * self.heads * self.n * self.m

    def folder_name(self) -> str:
        """A name for this shape's scratch folder, distinct for every distinct shape."""
        name = f"{self.n}x{self.m}x{self.d_k}"
        if not self.problem().plain:
            name += f"-b{self.batch}h{self.heads}kv{self.kv_heads}"
            name += "-causal" if self.causal else ""
            name += "-scaled" if self.scaled else ""
        return name


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
    environment: str | None = None  # the environments axis; None: the run's own interpreter

    @property
    def dtype(self) -> str:
        return self.variant.dtype

    @property
    def member(self) -> str:
        """The cell's member of its interleaving group: the backend, in its environment."""
        return member_name(self.backend, self.environment)

    def key(self) -> dict[str, object]:
        """The columns that identify this cell in every table (see results.CELL_KEY)."""
        shape = self.shape
        return {"backend": self.backend, "dtype": self.variant.dtype, "n": shape.n,
                "m": shape.m, "d_k": shape.d_k, "phase": self.variant.phase,
                "cache": self.variant.cache, "threads_requested": self.variant.threads,
                "batch": shape.batch, "heads": shape.heads, "kv_heads": shape.kv_heads,
                "causal": shape.causal, "scaled": shape.scaled, "preset": shape.preset or None,
                "environment": self.environment}


def member_name(backend: str, environment: str | None) -> str:
    """`label` alone, or `label@environment` (a backend label never holds an @)."""
    return backend if environment is None else f"{backend}@{environment}"


def _head_configs(config: Config) -> list[tuple[str, int, int, int]]:
    """(preset, heads, kv_heads, d_k) of every cell: the presets' or the axes' product."""
    sweep = config.sweep
    if sweep.preset is not None:
        return [(name, p.heads, p.kv_heads, p.d_k)
                for name, p in ((name, presets.lookup(name)) for name in sweep.preset)]
    return [("", heads, kv_heads, d_k)
            for heads, kv_heads in sweep.head_pairs() for d_k in sweep.sizes("d_k")]


def shapes(config: Config) -> list[Shape]:
    sweep = config.sweep
    ns = sweep.sizes("n")
    if sweep.m is None:
        pairs = [(n, n) for n in ns]
    else:
        pairs = list(product(ns, sweep.sizes("m")))
    def batches(n: int) -> list[int]:
        return [max(1, sweep.tokens // n)] if sweep.tokens is not None else sweep.sizes("batch")

    return [Shape(n, m, d_k, batch, heads, kv_heads, causal, scaled, preset)
            for (n, m), (preset, heads, kv_heads, d_k) in product(pairs, _head_configs(config))
            for batch, causal, scaled in product(batches(n), sweep.causal, sweep.scaled)]


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
    """Per shape, its interleaving groups (each one the cells of one variant, every backend in
    every environment); with a shard, only the groups that shard takes. Shapes left without
    groups are dropped."""
    shard = shard or Shard()
    environments: list[str | None] = [e.name for e in config.environments] or [None]
    out, number = [], 0
    for shape in shapes(config):
        taken = []
        for variant in variants(config):
            if shard.takes(number):
                taken.append([Cell(label, shape, variant, environment)
                              for label in backend_labels for environment in environments])
            number += 1
        if taken:
            out.append((shape, taken))
    return out


def expand(config: Config, backend_labels: list[str], shard: Shard | None = None) -> list[Cell]:
    return [cell for _, shape_groups in groups(config, backend_labels, shard)
            for group in shape_groups for cell in group]


def size_limits(config: Config, specs: list[BackendSpec]) -> dict[str, float]:
    """label → the entry's `max_gflop`, for the backends of `resolve_backends(config)` that
    have one (the specs are in the order of the entries)."""
    return {spec.label: entry.max_gflop for entry, spec in zip(config.backends, specs)
            if isinstance(entry, BackendEntry) and entry.max_gflop is not None}


def above_size_limit(limits: dict[str, float], backend: str, flops: int) -> str | None:
    """Why a cell of `flops` per call is skipped for `backend` (`size_limits`), or None."""
    limit = limits.get(backend)
    if limit is None or flops <= limit * 1e9:
        return None
    return (f"{flops / 1e9:.3g} GFLOP per call, above the max_gflop {limit:g} the config sets "
            f"for {backend}")
