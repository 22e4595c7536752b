"""A config's validation errors as users read them: one line naming the key path and what is
wrong, and a wrong value quoted as a bounded sketch."""

from __future__ import annotations

import reprlib
from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

# How a wrong value is quoted in an error: a bounded sketch. YAML aliases let a few hundred bytes
# stand for a nested list of billions of items (nine aliases of nine): its full repr never ends.
_SKETCH = reprlib.Repr()
_SKETCH.maxlevel, _SKETCH.maxlist, _SKETCH.maxdict = 2, 4, 4
_SKETCH.maxstring = _SKETCH.maxother = 80


def shown(value: Any) -> str:
    """`value` as an error message quotes it: its repr, cut short where it is long or deep."""
    return _SKETCH.repr(value)


def key_path(loc: tuple[Any, ...], union_tags: Collection[str] = ()) -> str:
    """Pydantic's error location as the user's key path: `sweep.n[2]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in union_tags:
            continue  # the union branch pydantic chose; not part of the user's key path
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def one_line(exc: ValidationError, union_tags: Collection[str] = ()) -> str:
    """Pydantic's multi-line report → one line: the first problem's key path and expectation."""
    errors = exc.errors(include_url=False)
    # Prefer the error whose path is longest: for a union it is the branch the user meant.
    first = max(errors, key=lambda e: len(e["loc"]))
    message = first["msg"].removeprefix("Value error, ")
    where = key_path(first["loc"], union_tags)
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{where}: {message}{more}"
