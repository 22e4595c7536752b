"""The cell identity, declared once: the table of axes a cell is named by, and `CellKey`.

Every other declaration of a cell's axes is derived from `AXES`: the backend's `Problem`
(the axes marked `problem`), the sweep's `Shape` and `Variant` (the axes of each part), the
key columns of the run directory and `SummaryRecord`'s key fields (`axis_fields`), the
interleaving group (`CellKey.group`), a cell's label, and the lists of axes that tables show.

To add an axis: one `Axis` row here, the sweep key that lists its values (plan/config.py),
and, when backends must see it, `problem=True` (backends read it from `Problem`). An axis
added after runs exist needs a default: the value every run written before it measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from qkbench.units import missing

#: Parts of a cell: which backend in which environment (`member`, the one part that differs
#: inside an interleaving group), what one reference serves (`shape`), and how it is run
#: (`variant`).
PARTS = ("member", "shape", "variant")


@dataclass(frozen=True)
class Axis:
    """One axis of the cell identity."""

    name: str  # the column in every table, the field of every type that carries it
    hint: Any  # its Python type
    default: Any  # what a cell that does not set it measured; MISSING: always given
    unit: str
    meaning: str
    part: str  # one of PARTS
    problem: bool = False  # the backend's Problem carries it (a shape axis backends compute with)
    sweep_key: str | None = None  # the config's sweep key, where it is named otherwise

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def blank(self) -> Any:
        """The axis' value in an interleaving group's key, which spans the member part."""
        return "" if self.required else self.default

    def field(self, meaning_suffix: str = "") -> Any:
        metadata = {"unit": self.unit, "meaning": self.meaning + meaning_suffix}
        if self.required:
            return field(metadata=metadata)
        return field(default=self.default, metadata=metadata)


AXES: tuple[Axis, ...] = (
    Axis("backend", str, MISSING, "", "the backend's label (`numpy`, `torch-cpu`, a plugin's "
         "name)", "member"),
    Axis("dtype", str, MISSING, "", "the dtype of Q and K asked for", "variant"),
    Axis("n", int, MISSING, "rows", "rows of Q (queries)", "shape", problem=True),
    Axis("m", int, MISSING, "rows", "rows of K (keys); m = n for self-attention", "shape",
         problem=True),
    Axis("d_k", int, MISSING, "", "the shared inner dimension", "shape", problem=True),
    Axis("phase", str, "kernel", "", "`kernel` (device-resident inputs) or `end-to-end` (host "
         "in, host out)", "variant"),
    Axis("cache", str, "warm", "", "`warm` (inputs reused) or `cold` (copies rotated past the "
         "last level cache)", "variant"),
    Axis("threads_requested", int | None, None, "threads", "threads asked for; empty for the "
         "library's default", "variant", sweep_key="threads"),
    # The attention axes (docs/attention.md): their defaults are the plain 2-D product.
    Axis("batch", int, 1, "", "B, batch elements", "shape", problem=True),
    Axis("heads", int, 1, "", "H, query heads", "shape", problem=True),
    Axis("kv_heads", int, 1, "", "H_kv, key heads (divides heads; query head h reads key head "
         "h // (H / H_kv))", "shape", problem=True),
    Axis("causal", bool, False, "", "key j masked (−inf) for query i when j > i + (m − n)",
         "shape", problem=True),
    Axis("scaled", bool, False, "", "S divided by √d_k", "shape", problem=True),
    Axis("preset", str | None, None, "", "the model preset that set heads, kv_heads and d_k",
         "shape"),
    # The environments axis (docs/environments.md): empty for a run without one, whose every
    # worker ran the run's own interpreter.
    Axis("environment", str | None, None, "", "the environment (`--env NAME=PYTHON`) whose "
         "interpreter ran the cell; empty: the run's own", "member"),
)
assert all(axis.part in PARTS for axis in AXES)
# What a backend computes with is part of the shape: one reference serves each shape.
assert all(axis.part == "shape" for axis in AXES if axis.problem)
# dataclass fields without a default must come first, in every type built from the table
assert [a.required for a in AXES] == sorted((a.required for a in AXES), reverse=True)

AXIS_BY_NAME: dict[str, Axis] = {axis.name: axis for axis in AXES}
CELL_KEY: list[str] = [axis.name for axis in AXES]
KEY_DEFAULTS: dict[str, Any] = {a.name: a.default for a in AXES if not a.required}
#: The axes a table shows only where a run varied them (every one with a default).
OPTIONAL_AXES: list[str] = list(KEY_DEFAULTS)
#: The attention axes: the shape beyond n, m and d_k (their defaults are the 2-D product).
ATTENTION_AXES: list[str] = [a.name for a in AXES if a.part == "shape" and not a.required]


def names(part: str) -> list[str]:
    return [axis.name for axis in AXES if axis.part == part]


def axis_fields(select: Callable[[Axis], bool], meaning_suffix: str = "") -> Callable[[type], type]:
    """A class decorator, applied under `@dataclass`: puts the fields of the selected axes,
    in the table's order, before the class's own fields. A type that carries axes declares
    them this way and never by hand."""
    chosen = [axis for axis in AXES if select(axis)]

    def decorate(cls: type) -> type:
        own = dict(cls.__dict__.get("__annotations__", {}))
        clash = set(own) & {axis.name for axis in chosen}
        if clash:
            raise TypeError(f"{cls.__name__} declares axes by hand: {sorted(clash)}")
        cls.__annotations__ = {**{axis.name: axis.hint for axis in chosen}, **own}
        for axis in chosen:
            setattr(cls, axis.name, axis.field(meaning_suffix))
        return cls

    return decorate


def plain_value(value: Any, hint: Any) -> Any:
    """NumPy and pandas scalars as plain Python values, so that keys from a table, a log and
    a sweep compare and hash alike."""
    if hasattr(value, "item"):
        value = value.item()
    text = str(hint)
    if "int" in text and not isinstance(value, bool):
        return int(value)
    if "str" in text:
        return str(value)
    return value


@dataclass(frozen=True)
@axis_fields(lambda axis: True)
class CellKey:
    """What identifies a cell: two rows (of one run or of two) with equal keys measured the
    same thing. A field with a default is an axis added after the first runs; a run directory
    that lacks the column measured the default."""

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> CellKey:
        """The key of a row, a sample or a log record; a missing value becomes the default."""
        values: dict[str, Any] = {}
        for axis in AXES:
            value = row.get(axis.name)
            if missing(value):
                if axis.required:
                    raise ValueError(f"a row without {axis.name!r} has no cell key")
                continue
            values[axis.name] = plain_value(value, axis.hint)
        return cls(**values)

    @classmethod
    def from_parts(cls, *parts: Any, **values: Any) -> CellKey:
        """The key of a cell from the types that carry its parts (a Shape, a Variant, …) and
        the remaining axes by name."""
        for part in parts:
            values.update({spec.name: getattr(part, spec.name) for spec in fields(part)})
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CELL_KEY}

    def part(self, part: str) -> dict[str, Any]:
        """The values of one part's axes (`member`, `shape` or `variant`)."""
        return {name: getattr(self, name) for name in names(part)}

    def _order(self) -> tuple[Any, ...]:
        # None (the library default) sorts first and never meets an int in a comparison.
        return tuple((value is not None, value) for value in self.as_dict().values())

    def __lt__(self, other: CellKey) -> bool:  # tables sort and group by keys
        return self._order() < other._order()

    @property
    def member(self) -> str:
        """The cell's member of its interleaving group: the backend, in its environment."""
        return member_name(self.backend, self.environment)

    def group(self) -> CellKey:
        """The key of this cell's interleaving group: every member (each backend, in every
        environment) of one shape and variant."""
        return replace(self, **{axis.name: axis.blank for axis in AXES if axis.part == "member"})

    def label(self) -> str:
        """Short words for people: the shape, then only the axes that differ from default."""
        text = f"{self.backend} {self.dtype} n={self.n} m={self.m} d_k={self.d_k}".lstrip()
        for name, default in KEY_DEFAULTS.items():
            if getattr(self, name) != default:
                text += f" {name}={getattr(self, name)}"
        return text

    @property
    def threads_text(self) -> str:
        """threads_requested as text ('' = library default) for tables that need a value that
        equals itself: NA never equals NA in a join or a groupby key."""
        return "" if self.threads_requested is None else str(self.threads_requested)


def member_name(backend: str, environment: str | None) -> str:
    """`label` alone, or `label@environment` (a backend label never holds an @)."""
    return backend if environment is None else f"{backend}@{environment}"
