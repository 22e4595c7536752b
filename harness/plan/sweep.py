"""A validated Config → the list of cells to run, in the order they run.

A cell is one backend × one shape (n, m, d_k, and for attention cells batch, heads, kv_heads,
causal, scaled, preset) × one dtype × one phase × one cache state × one
thread count. Cells are ordered shape-major; all backends of one (shape, dtype, phase, cache,
threads) group run back to back, which is what lets the timing step interleave their samples
and lets one reference serve the whole shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import product
from typing import Any

from qkbench.backends.base import Problem
from qkbench.cell_key import AXES, Axis, CellKey, axis_fields
from qkbench.plan import presets
from qkbench.backends.registry import BackendSpec
from qkbench.plan.config import BackendEntry, Config

PROBLEM_AXES = [axis.name for axis in AXES if axis.problem]


@dataclass(frozen=True, order=True)
@axis_fields(lambda axis: axis.part == "shape")
class Shape:
    """What one reference serves: the shape axes of qkbench.cell_key (n, m, d_k, and the
    attention axes, whose defaults are the plain 2-D product)."""

    def problem(self) -> Problem:
        """What a backend computes for this shape (the semantics live in `Problem`)."""
        return Problem(**{name: getattr(self, name) for name in PROBLEM_AXES})

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
        for axis in AXES:  # -causal, -scaled, and any other shape axis off its default
            value = getattr(self, axis.name) if axis.part == "shape" else axis.default
            if axis.name not in DERIVED_SHAPE and value != axis.default:
                name += f"-{axis.name}" if value is True else f"-{axis.name}{value}"
        return name


@dataclass(frozen=True)
@axis_fields(lambda axis: axis.part == "variant")
class Variant:
    """Everything about a cell but its member and shape: one interleaving group (dtype, phase,
    cache, threads_requested; None threads: the library's default)."""


@dataclass(frozen=True)
class Cell:
    """One cell of the sweep: its key, and the views of it the runner works with."""

    key: CellKey

    @classmethod
    def of(cls, backend: str, shape: Shape, variant: Variant,
           environment: str | None = None) -> Cell:
        return cls(CellKey.from_parts(shape, variant, backend=backend, environment=environment))

    @property
    def backend(self) -> str:
        return self.key.backend

    @property
    def environment(self) -> str | None:
        return self.key.environment

    @property
    def dtype(self) -> str:
        return self.key.dtype

    @property
    def member(self) -> str:
        return self.key.member

    @cached_property
    def shape(self) -> Shape:
        return Shape(**self.key.part("shape"))

    @cached_property
    def variant(self) -> Variant:
        return Variant(**self.key.part("variant"))


def _head_configs(config: Config) -> list[tuple[str | None, int, int, int]]:
    """(preset, heads, kv_heads, d_k) of every cell: the presets' or the axes' product."""
    sweep = config.sweep
    if sweep.preset is not None:
        return [(name, p.heads, p.kv_heads, p.d_k)
                for name, p in ((name, presets.lookup(name)) for name in sweep.preset)]
    return [(None, heads, kv_heads, d_k)
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

    # The other shape axes (causal, scaled, and any added to the table) are a plain product of
    # the values their sweep key lists.
    others = [axis for axis in AXES if axis.part == "shape" and axis.name not in DERIVED_SHAPE]
    other_values = list(product(*(_values(sweep, axis) for axis in others)))
    return [Shape(n=n, m=m, d_k=d_k, batch=batch, heads=heads, kv_heads=kv_heads, preset=preset,
                  **dict(zip((axis.name for axis in others), values)))
            for (n, m), (preset, heads, kv_heads, d_k) in product(pairs, _head_configs(config))
            for batch, values in product(batches(n), other_values)]


# Shape axes whose values come from more than their own sweep key: m defaults to n, batch to
# `tokens // n`, and a preset sets heads, kv_heads and d_k.
DERIVED_SHAPE = ("n", "m", "d_k", "batch", "heads", "kv_heads", "preset")


def _values(sweep: Any, axis: Axis) -> list[Any]:
    """The values a sweep lists for an axis; its default where the sweep leaves it out."""
    return list(getattr(sweep, axis.sweep_key or axis.name, None) or [axis.default])


def variants(config: Config) -> list[Variant]:
    """Every combination of the variant axes' values, in the table's order (an axis the
    sweep leaves out takes its default)."""
    sweep = config.sweep
    axes = [axis for axis in AXES if axis.part == "variant"]
    values = [_values(sweep, axis) for axis in axes]
    return [Variant(**dict(zip((axis.name for axis in axes), combination)))
            for combination in product(*values)]


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
                taken.append([Cell.of(label, shape, variant, environment)
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
