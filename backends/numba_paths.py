"""The `numba` kernel's paths: a tile geometry per vector width, and which one this CPU gets.

A path is a register-tile geometry — R rows × a tile width in bytes, the block of S one
thread takes — not a different instruction set. Every geometry compiles and runs on any CPU
(LLVM splits a 128-byte tile row into four 256-bit or eight 128-bit registers where it has
no 512-bit ones), so every path's correctness can be tested on any machine; detection only
decides which geometry the host gets by default.

Why each geometry fits its width. One step t of the tile loads the row of K the tile covers
(tile_bytes / vector_bytes vector loads), broadcasts R values of Q and does R × that many
vector FMAs. Two rules size it:

- Latency: an FMA takes about 4 cycles and current cores issue 2 per cycle, so at least
  8 independent accumulators must be in flight. Sizing for the most pipes any core has is
  safe on a core with fewer: the extra chains cost nothing.
- Ports: a core loads at most 2 vectors (or broadcasts) per cycle and issues 2 FMAs, so a
  step must need fewer loads than FMAs, or the loads, not the FMAs, set the pace.

- `avx512` (32 registers of 64 bytes): 8 rows × 128 bytes = 16 zmm accumulators, 2 loads of
  K and 8 broadcasts (a load each) per 16 FMAs, so it is FMA-bound; 26 of the 32
  registers are live. LLVM prefers 256-bit vectors on Intel's AVX-512
  cores (frequency licences on old parts), so this path asks for 512-bit ones
  (`vector_bits`): without that the tile becomes 32 ymm accumulators and spills, and the
  earlier 8 × 64-byte tile compiled to 256-bit FMAs only, half the machine's width — why it
  reached ~0.76x of OpenBLAS on an Emerald Rapids Xeon.
- `avx2` (16 registers of 32 bytes): 4 rows × 64 bytes = 8 ymm accumulators, 2 loads and 4
  broadcasts per 8 FMAs, 11 of 16 registers live. Bigger tiles fit on paper (6 × 64 bytes:
  12 accumulators, 15 registers) but LLVM hoists a step's broadcasts ahead of its FMAs and
  then spills accumulators: 0.45-0.6x of this tile, measured on Zen 3 (docs/numba.md).
- `portable` (anything else: SSE, Arm NEON and SVE through LLVM's fixed-width code, ...):
  sized for 128-bit vectors and only 16 registers, the smallest common case: 4 rows ×
  32 bytes = 8 accumulators, 2 loads and 4 broadcasts per 8 FMAs. With 32 registers (NEON)
  it leaves half of them idle, but it never spills anywhere.

The block of S a thread takes is 64 rows × 256 columns on every path, a multiple of every
tile: at n = m = 512 that is 16 blocks, enough to keep several threads busy, while one K
panel (tile width × d_k: 16 KiB at d_k = 128 for 128-byte tiles) stays in L1 as the block's
strips of Q pass it.

The measured figures behind these choices are in docs/numba.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

#: Names the environment variable and the backend option accept ("auto" means detect).
ENV_VAR = "QKBENCH_NUMBA_PATH"


@dataclass(frozen=True)
class Geometry:
    """One path's tile geometry; compiled into the kernel as constants (see numba_kernels)."""

    name: str
    rows: int  # R: rows of the register tile (one broadcast of Q each)
    tile_bytes: int  # width of a tile row and of a K panel, in bytes
    block_rows: int  # rows of S per thread block: a multiple of `rows`
    block_cols: int  # columns of S per thread block: a multiple of every tile width
    vector_bits: int  # the vector width LLVM is asked to prefer; 0 leaves it to LLVM

    def __post_init__(self) -> None:
        # numba_kernels._tile spells out rows 0-3 always and 4-7 in pairs.
        if self.rows not in (4, 6, 8) or self.block_rows % self.rows:
            raise ValueError(f"{self.name}: rows must be 4, 6 or 8 and divide block_rows")
        if self.tile_bytes % 16 or self.block_cols % (self.tile_bytes // 4):
            raise ValueError(f"{self.name}: tile_bytes must be a multiple of 16 and the "
                             "tile's float32 columns must divide block_cols")

    def columns(self, itemsize: int) -> int:
        """W: columns of the tile (and of a K panel) for elements of `itemsize` bytes."""
        return self.tile_bytes // itemsize


PATHS = {
    "avx512": Geometry("avx512", rows=8, tile_bytes=128, block_rows=64, block_cols=256,
                       vector_bits=512),
    "avx2": Geometry("avx2", rows=4, tile_bytes=64, block_rows=64, block_cols=256,
                     vector_bits=0),
    "portable": Geometry("portable", rows=4, tile_bytes=32, block_rows=64, block_cols=256,
                         vector_bits=0),
}


def path_for_features(features: str) -> str:
    """The path for an LLVM feature string such as "+avx2,+fma,-avx512f,..."."""
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    if "avx512f" in enabled and "fma" in enabled:
        return "avx512"
    if "avx2" in enabled and "fma" in enabled:
        return "avx2"
    return "portable"


@cache
def jit_target() -> tuple[str, str]:
    """(CPU name, features) that Numba compiles for: NUMBA_CPU_NAME / NUMBA_CPU_FEATURES when
    set, else the host as LLVM sees it (minus AVX under NUMBA_ENABLE_AVX=0). Asked of Numba
    itself, so the tile matches the registers the generated code really has."""
    import llvmlite.binding as llvm
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    name = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES
    return name, get_host_cpu_features() if features is None else features


def detected_path() -> str:
    """The path for the CPU the JIT targets."""
    return path_for_features(jit_target()[1])


def select(path: str | None = None) -> Geometry:
    """The geometry for `path` (a backend option), else $QKBENCH_NUMBA_PATH, else detection."""
    choice = path or os.environ.get(ENV_VAR) or "auto"
    if choice == "auto":
        choice = detected_path()
    if choice not in PATHS:
        known = ", ".join(["auto", *PATHS])
        raise ValueError(f"unknown numba path {choice!r} (known: {known})")
    return PATHS[choice]
