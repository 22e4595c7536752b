"""Shared by every step, the conventions of a value: times are stored in seconds, always, and
given a unit only when shown to a person; an absent value is None, NaN or pandas' NA, one rule
(`missing`) for all three."""

from __future__ import annotations

import math
from typing import Any


def missing(value: Any) -> bool:
    """The one rule for an absent value: None, NaN and pandas' NA (a value read back from a
    log, a CSV or a Parquet column of an older run) all mean "not recorded"."""
    if value is None:
        return True
    try:
        return bool(value != value)  # noqa: PLR0124  (NaN, NaT; pandas.NA raises TypeError)
    except TypeError:
        return True  # pandas.NA: "ambiguous truth value" is its way of being missing


def format_seconds(seconds: float | None) -> str:
    """A time in the largest unit that keeps it at or above 1: '3.1 ms', '870 ns'."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def value_text(value: float | None, normalised: bool) -> str:
    """A tracked value: seconds, or (normalised) a ratio to a reference backend's time."""
    if missing(value):
        return "-"
    return f"{value:.3f}" if normalised else format_seconds(float(value))
