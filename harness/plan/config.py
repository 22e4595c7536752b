"""YAML config file → validated `Config`. Nothing downstream ever sees unchecked input.

Read by `qkbench.plan.yaml_file` (a safe loader: no YAML tag can construct a Python object;
duplicate keys and oversized files refused) and validated here strictly:
unknown keys, wrong types (no silent "512" → 512), non-positive sizes, unknown dtypes and
unknown backends are errors that name the key path, raised as `UsageError` (exit code 2).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from qkbench.backends import registry
from qkbench.errors import UsageError
from qkbench.plan import presets
from qkbench.plan.config_errors import one_line, shown
from qkbench.plan.environments import EnvironmentEntry, unique_environments
from qkbench.plan.environments import with_environments  # noqa: F401  (re-exported)
from qkbench.plan.yaml_file import parse_yaml_text, read_yaml  # noqa: F401  (re-exported)

DType = Literal["float16", "bfloat16", "float32", "float64"]
# Bytes per element of each dtype: what memory estimates and the roofline's bytes count.
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
Phase = Literal["kernel", "end_to_end"]
CacheState = Literal["warm", "cold"]
# Sizes past this are a typo, not a benchmark (2^24 rows of Q alone would be gigabytes).
MAX_SIZE = 1 << 24
Size = Field(gt=0, le=MAX_SIZE)
# More (n, m, d_k, dtype) combinations than this is a typo in a range, not a plan: a sweep that
# big would never finish, and expanding it would exhaust memory before the first cell ran.
MAX_POINTS = 100_000
# The largest count (a cell's FLOP, its bytes) an int64 column of the tables holds.
MAX_COUNT = 2**63 - 1
# A time limit or budget past a week is a typo, not a plan; past 2^31 ms (about 25 days) the
# OS's wait for a worker's answer cannot even take it (an OverflowError at the first wait).
MAX_SECONDS = 7 * 24 * 3600.0

class _Strict(BaseModel):
    # No .inf/.nan: an infinite timeout is no limit at all, and an infinite factor overflows.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class GeometricRange(_Strict):
    """start, start·factor, start·factor², ... up to and including stop (rounded to integers)."""

    start: int = Size
    stop: int = Size
    factor: float = Field(gt=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> GeometricRange:
        if self.stop < self.start:
            raise ValueError(f"stop ({self.stop}) is below start ({self.start})")
        return self

    def count(self) -> int:
        """How many steps values() takes, without taking them (a factor of 1 + 1e-9 is a hang)."""
        return math.floor(math.log(self.stop / self.start) / math.log(self.factor)) + 1

    def values(self) -> list[int]:
        out, x = [], float(self.start)
        # Compare the float first: start · factor can overflow to inf, which round() rejects.
        while x < self.stop + 1 and round(x) <= self.stop:
            if not out or round(x) != out[-1]:
                out.append(round(x))
            x *= self.factor
        return out


class LinearRange(_Strict):
    """start, start+step, ... up to and including stop."""

    start: int = Size
    stop: int = Size
    step: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LinearRange:
        if self.stop < self.start:
            raise ValueError(f"stop ({self.stop}) is below start ({self.start})")
        return self

    def count(self) -> int:
        return (self.stop - self.start) // self.step + 1

    def values(self) -> list[int]:
        return list(range(self.start, self.stop + 1, self.step))


def _axis_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "geometric-range" if "factor" in value else "linear-range" if "step" in value else None
    return "size-list"


# A size axis is a list, or a range told apart by its keys, so that an error message speaks
# about the form the user wrote rather than about every form pydantic tried.
SizeAxis = Annotated[
    Annotated[list[int], Tag("size-list")]
    | Annotated[GeometricRange, Tag("geometric-range")]
    | Annotated[LinearRange, Tag("linear-range")],
    Discriminator(_axis_kind, custom_error_type="axis",
                  custom_error_message="expected a list of sizes, or a range "
                                       "{start, stop, factor} or {start, stop, step}"),
]
# The tags of the union branches: pydantic puts the one it chose in an error's key path.
UNION_TAGS = {"size-list", "geometric-range", "linear-range", "backend-name", "backend-mapping"}


def _axis_values(axis: SizeAxis) -> list[int]:
    return list(axis) if isinstance(axis, list) else axis.values()


def _axis_count(axis: SizeAxis | None) -> int:
    return 1 if axis is None else len(axis) if isinstance(axis, list) else axis.count()


class Sweep(_Strict):
    n: SizeAxis
    m: SizeAxis | None = None  # omitted: m = n (self-attention)
    # Published models' heads, kv_heads and d_k (qkbench.plan.presets), instead of those axes;
    # before d_k, so that d_k's check can see it.
    preset: list[str] | None = Field(default=None, min_length=1)
    # Required unless a preset sets it (validate_default: an omitted d_k is checked too).
    d_k: SizeAxis | None = Field(default=None, validate_default=True)
    # Attention axes (semantics: backends.base.Problem, docs/attention.md). All omitted: the
    # plain 2-D product, B = H = H_kv = 1, not causal, not scaled.
    batch: SizeAxis = [1]
    # Instead of batch: batch = max(1, tokens // n) per n, so every sequence length gets about
    # the same work (FlashAttention's and tritonbench's benchmarks use batch × seq = 16k).
    tokens: int | None = Field(default=None, gt=0, le=MAX_SIZE)
    heads: SizeAxis | None = None  # query heads; omitted: 1
    kv_heads: SizeAxis | None = None  # key heads, each dividing heads; omitted: = heads
    causal: list[bool] = Field(default=[False], min_length=1)
    scaled: list[bool] = Field(default=[False], min_length=1)  # S = Q·Kᵀ / √d_k
    dtype: list[DType] = Field(default=["float32"], min_length=1)
    # What the time includes: inputs already where the backend wants them ("kernel"), or host
    # arrays in and a host array out, transfers and casts included ("end_to_end").
    phase: list[Phase] = Field(default=["kernel"], min_length=1)
    # "warm": the same inputs every call; "cold": inputs rotated through copies that together
    # exceed the last-level cache, so every call starts from memory.
    cache: list[CacheState] = Field(default=["warm"], min_length=1)
    # Threads per CPU backend; omitted means each library's default (recorded per row).
    threads: list[Annotated[int, Field(gt=0, le=4096)]] | None = None

    @field_validator("n", "m", "d_k", "batch", "heads", "kv_heads", mode="before")
    @classmethod
    def _scalar_to_list(cls, value: Any) -> Any:
        if value is None or isinstance(value, (list, dict)):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        raise ValueError(f"expected a size (a whole number), a list of sizes, or a range "
                         f"{{start, stop, factor}} or {{start, stop, step}}; got {shown(value)}")

    @field_validator("dtype", "phase", "cache", "preset", mode="before")
    @classmethod
    def _word_to_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("causal", "scaled", mode="before")
    @classmethod
    def _flag_to_list(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return [value]
        if not isinstance(value, list):
            raise ValueError(f"expected true, false or a list of them; got {shown(value)}")
        return value

    @field_validator("preset")
    @classmethod
    def _presets_known(cls, names: list[str] | None) -> list[str] | None:
        for name in names or []:
            presets.lookup(name)  # ValueError listing the known presets
        return names

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_to_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("dtype", "phase", "cache", "threads", "causal", "scaled", "preset")
    @classmethod
    def _no_repeats(cls, values: list[Any] | None) -> list[Any] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"lists a value twice: {values}")
        return values

    @field_validator("n", "m", "d_k", "batch", "heads", "kv_heads")
    @classmethod
    def _sizes_valid(cls, axis: SizeAxis | None) -> SizeAxis | None:
        if isinstance(axis, list):
            if not axis:
                raise ValueError("must list at least one size")
            bad = [v for v in axis if v <= 0 or v > MAX_SIZE]
            if bad:
                raise ValueError(f"sizes must be between 1 and {MAX_SIZE}, got {bad[0]}")
        return axis

    @model_validator(mode="after")
    def _batch_given_once(self) -> Sweep:
        if self.tokens is not None and "batch" in self.model_fields_set:
            raise ValueError("tokens sets the batch (tokens // n); remove batch or tokens")
        return self

    @model_validator(mode="after")
    def _heads_given_once(self) -> Sweep:
        if self.preset is not None:
            explicit = [axis for axis in ("heads", "kv_heads", "d_k") if getattr(self, axis)]
            if explicit:
                raise ValueError(f"preset sets heads, kv_heads and d_k; remove "
                                 f"{' and '.join(explicit)} or the preset")
        return self

    @field_validator("d_k")
    @classmethod
    def _d_k_given(cls, axis: SizeAxis | None, info: ValidationInfo) -> SizeAxis | None:
        if axis is None and info.data.get("preset") is None and "preset" in info.data:
            raise ValueError("required (or a preset, which sets it)")
        return axis

    @model_validator(mode="after")
    def _not_absurd(self) -> Sweep:
        heads = (len(self.preset) if self.preset else
                 _axis_count(self.d_k) * _axis_count(self.heads) * _axis_count(self.kv_heads))
        points = (_axis_count(self.n) * _axis_count(self.m) * heads * _axis_count(self.batch)
                  * len(self.causal) * len(self.scaled)
                  * len(self.dtype) * len(self.phase) * len(self.cache) * len(self.threads or [0]))
        if points > MAX_POINTS:
            raise ValueError(f"expands to {points:,} (n, m, d_k, dtype, ...) combinations, more than "
                             f"{MAX_POINTS:,}; is a range's stop, step or factor a typo?")
        return self

    @model_validator(mode="after")
    def _counts_fit_the_tables(self) -> Sweep:
        # Sizes within MAX_SIZE can multiply past the int64 flops and bytes columns (bounded
        # from above: the most heads, the largest d_k, K per query head, 8-byte items).
        heads = max(h for h, _ in self.head_pairs())
        d_k = max(presets.lookup(p).d_k for p in self.preset) if self.preset is not None \
            else max(self.sizes("d_k")) if self.d_k is not None else 1
        largest = 0
        for n in self.sizes("n"):
            m = max(self.sizes("m")) if self.m is not None else n
            batch = max(1, self.tokens // n) if self.tokens is not None \
                else max(self.sizes("batch"))
            largest = max(largest, 2 * batch * heads * d_k * n * m,
                          8 * batch * heads * (d_k * (n + m) + n * m))
        if largest > MAX_COUNT:
            raise ValueError(f"a cell would count {largest:.3g} FLOP or bytes, more than the "
                             "2^63 the tables hold; is a size a typo?")
        return self

    @model_validator(mode="after")
    def _attention_consistent(self) -> Sweep:
        # After _not_absurd: the axes' values are only taken once they are known to be few.
        for heads, kv_heads in self.head_pairs():
            if heads % kv_heads:
                raise ValueError(f"kv_heads {kv_heads} does not divide heads {heads} (query head "
                                 f"h reads key head h // (heads / kv_heads))")
        if True in self.causal and self.m is not None:
            # Bottom-right alignment masks key j for query i when j > i + (m − n): with n > m
            # the first n − m queries would see no key at all, and softmax over nothing is NaN.
            n, m = max(self.sizes("n")), min(self.sizes("m"))
            if n > m:
                raise ValueError(f"causal needs n ≤ m (queries are the last n of m positions); "
                                 f"n = {n} with m = {m} would mask whole rows")
        return self

    def head_pairs(self) -> list[tuple[int, int]]:
        """(heads, kv_heads) of every cell (presets' or the axes'), in sweep order."""
        if self.preset is not None:
            return [(presets.lookup(p).heads, presets.lookup(p).kv_heads) for p in self.preset]
        heads = self.sizes("heads") if self.heads is not None else [1]
        return [(h, kv) for h in heads
                for kv in (self.sizes("kv_heads") if self.kv_heads is not None else [h])]

    def sizes(self, axis: str) -> list[int]:
        return _axis_values(getattr(self, axis))


class BackendEntry(_Strict):
    """A backend given as a mapping: a name or import path, an optional label, options."""

    name: str = Field(min_length=1)
    label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    options: dict[str, Any] = Field(default_factory=dict)
    # The largest cell this backend runs, in GFLOP per call (2·n·m·d_k over batch and heads,
    # causal-masked entries left out): larger cells of the sweep are recorded as skipped. For
    # a slow reference loop in a sweep whose other backends go further.
    max_gflop: float | None = Field(default=None, gt=0)


BackendItem = Annotated[
    # min_length as in BackendEntry.name: resolve_backends wraps a bare name in a BackendEntry,
    # which must not be where an empty name is first noticed (it would escape as a traceback).
    Annotated[str, Field(min_length=1), Tag("backend-name")]
    | Annotated[BackendEntry, Tag("backend-mapping")],
    Discriminator(lambda v: "backend-mapping" if isinstance(v, dict) else "backend-name",
                  custom_error_type="backend",
                  custom_error_message="expected a backend name or a mapping with 'name'"),
]


class Timing(_Strict):
    budget_s: float = Field(default=1.0, gt=0, le=MAX_SECONDS)  # timed s a cell may sample
    timeout_s: float = Field(default=300.0, gt=0, le=MAX_SECONDS)  # hard limit per cell
    target_rel_ci: float = Field(default=0.02, gt=0, lt=1)  # 95% CI half-width / median
    min_samples: int = Field(default=10, ge=6)  # 6 is the fewest with a 95% median interval
    max_samples: int = Field(default=10_000, ge=6)
    warmup_s: float = Field(default=0.05, ge=0, le=MAX_SECONDS)
    min_sample_s: float = Field(default=1e-3, gt=0, le=MAX_SECONDS)  # shorter: timed in blocks
    # Worker processes per backend that a cell's rounds take turns in. A process's buffers
    # land at addresses of its own, and measured here the same single-threaded torch product
    # ran 12% faster in some processes than in others, steadily; one process per run makes
    # that a run-to-run shift no interval can see. Several processes mix it into every run.
    processes: int = Field(default=3, ge=1, le=16)
    # Between rounds, time a small multi-threaded product in the main process and set aside
    # the rounds sampled while the machine had lost part of its parallel capacity (see
    # qkbench.machine.canary). Off: every round counts.
    machine_check: bool = True
    # GPU backends with a device clock capture each block of calls once as a CUDA graph and
    # replay it per sample, so a launch-bound cell measures the kernel, not the launch queue.
    cuda_graphs: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Timing:
        if self.max_samples < self.min_samples:
            raise ValueError("max_samples must be at least min_samples")
        if self.timeout_s <= self.budget_s:
            # A cell that samples for its whole budget would then always end as a timeout.
            raise ValueError(f"timeout_s ({self.timeout_s}) must be larger than budget_s "
                             f"({self.budget_s})")
        return self


class AgreementSettings(_Strict):
    # Above this many entries of S, the float64 reference covers a seeded sample of rows.
    max_reference_elements: int = Field(default=1 << 24, gt=0)


class Output(_Strict):
    dir: str = "results"

    @field_validator("dir")
    @classmethod
    def _a_path(cls, value: str) -> str:
        # No file system takes a NUL in a path: refused here, not as a traceback when the run
        # creates its directory.
        if "\x00" in value:
            raise ValueError("a path cannot contain a NUL character")
        return value


class Config(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = ""
    seed: int = Field(default=0, ge=0)
    sweep: Sweep
    backends: list[BackendItem] = Field(min_length=1)
    timing: Timing = Timing()
    agreement: AgreementSettings = AgreementSettings()
    output: Output = Output()
    # Two or more environments: every backend runs in each, interleaved round by round
    # (an axis of the cell key). Empty: every worker runs this process's interpreter.
    environments: Annotated[list[EnvironmentEntry], AfterValidator(unique_environments)] = []


def parse(data: Any, source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping with name, sweep and backends at the top")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{source}: {one_line(exc, UNION_TAGS)}") from None
    return config


def load(path: Path) -> Config:
    return parse(read_yaml(path), str(path))


def resolve_backends(config: Config) -> list[registry.BackendSpec]:
    """Every backend entry → a validated spec; labels must be unique within a config."""
    specs: list[registry.BackendSpec] = []
    for index, entry in enumerate(config.backends):
        if isinstance(entry, str):
            entry = BackendEntry(name=entry)
        try:
            spec = registry.resolve(entry.name, entry.label, entry.options)
        except UsageError as exc:
            raise UsageError(f"backends[{index}]: {exc}") from None
        if any(s.label == spec.label for s in specs):
            raise UsageError(f"backends[{index}]: the label {spec.label!r} is used twice "
                             "(give one of them a 'label')")
        specs.append(spec)
    return specs
