"""Shared by every step that shows a figure: times are stored in seconds, always, and given a
unit only when they are shown to a person."""

from __future__ import annotations

import math


def format_seconds(seconds: float | None) -> str:
    """A time in the largest unit that keeps it at or above 1: '3.1 ms', '870 ns'."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"
