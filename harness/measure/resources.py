"""Will a cell fit? Estimate its memory before running it, instead of being killed.

The OOM killer ends a process without a word, and on Linux it may pick the main process rather
than the worker, losing the run's bookkeeping. So before a shape's inputs are built and before
each cell is set up, the runner estimates the host memory it will need and skips the cell with
the reason when that is more than the memory available now (with a safety margin).
"""

from __future__ import annotations

import os
from pathlib import Path

from qkbench.measure.cell import cold_copies
from qkbench.plan.config import ITEMSIZE
from qkbench.plan.sweep import Cell, Shape

# Leave this share of the available memory to everything else (page cache, other processes).
SAFETY = 0.8


def available_bytes() -> int | None:
    """Memory that can be allocated now without swapping (Linux MemAvailable), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def reference_rows(shape: Shape, max_reference_elements: int) -> int:
    """Rows of S the reference holds: all B·H·n of them, or the sample that fits."""
    rows = shape.s_elements // shape.m
    return rows if shape.s_elements <= max_reference_elements else \
        max(1, max_reference_elements // shape.m)


def shape_bytes(shape: Shape, max_reference_elements: int) -> int:
    """The main process's share: float64 master inputs and the reference rows (and a copy
    of each while they are written out), for the timed and the fresh input set."""
    rows = reference_rows(shape, max_reference_elements)
    return 2 * 2 * 8 * (shape.q_elements + shape.k_elements + rows * shape.m)


def cell_bytes(shape: Shape, dtype: str, input_copies: int, max_reference_elements: int) -> int:
    """A worker's peak for one cell: inputs in the dtype (twice: host and prepared, per copy,
    and once more for the fresh set checked after timing), two outputs of B·H·n·m entries (the
    result and its host copy), and the float64 error arrays of the check."""
    size = ITEMSIZE[dtype]
    inputs = 2 * (input_copies + 1) * (shape.q_elements + shape.k_elements) * size
    outputs = 2 * shape.s_elements * size
    check = 4 * 8 * reference_rows(shape, max_reference_elements) * shape.m
    return inputs + outputs + check


def input_copies(cell: Cell, host_cache_bytes: int) -> int:
    """The input sets a cell holds: one, or for a cold cache as many as outrun the cache."""
    if cell.variant.cache != "cold":
        return 1
    shape = cell.shape
    return cold_copies((shape.q_elements + shape.k_elements) * ITEMSIZE[cell.dtype],
                       host_cache_bytes)


def too_big(needed: int, available: int | None) -> str | None:
    """The skip reason when `needed` bytes do not fit, else None."""
    if available is None or needed <= SAFETY * available:
        return None
    return (f"needs about {needed / 2**30:.1f} GiB of host memory, "
            f"{available / 2**30:.1f} GiB available")
