"""Backends `numba-loops` (readable single-threaded JIT loops) and `numba` (blocked parallel kernel).

Both compile with `cache=True`, so the 1-10 s of LLVM compilation is paid once per machine
and shows only in a cell's first-call column. The output is allocated by NumPy outside the
jitted code and filled in place: allocating inside njit code is slower and would make the
timed region include Numba's allocator.

How the `numba` kernel is blocked. A matrix product is fast when every value brought into a
register feeds many fused multiply-adds (FMAs). The kernel therefore computes S in register
tiles of 8 rows × W columns, W being two SIMD vectors of the dtype when the CPU has AVX-512
(32 float32 or 16 float64 columns) and one vector with AVX2 only (8 or 4). For each t < d_k,
one or two vector loads of K and 8 broadcasts of Q feed 8 or 16 vector FMAs into accumulators
that stay in registers for the whole d_k loop: 16 of AVX-512's 32 registers (8 of AVX2's 16),
enough independent chains to cover the FMA latency while leaving room for the operands.

- Why panels of K: the W columns of a tile are W rows of K, whose values for one t lie d_k
  elements apart. `scores` first copies K into panels of shape (d_k, W), so those W values
  are adjacent and one vector load fetches them. The copy is part of the timed call (done in
  parallel, O(m·d_k) against the product's O(n·m·d_k)). The last panel is zero-padded and rows
  past the end of Q repeat its last row, so edge tiles run the same code as full ones and only
  their stores are masked.
- Cache blocking: threads take blocks of `_BLOCK_ROWS` × `_BLOCK_COLS` of S. Inside a block one
  panel (at most 16 KiB for d_k = 128) stays in L1 while the 8-row strips of Q walk past it.
- Why the accumulators are stack arrays: Numba has no fixed-size local arrays, and a NumPy
  array allocated in jitted code lives on the heap, where LLVM must assume it may alias Q and
  K and so keeps storing and reloading it. `_register_row` reserves W accumulators on the
  stack instead; once LLVM has unrolled the W-long loops every index is a constant and it
  promotes the whole row to registers. The 8 rows are spelled out in `_tile` because a loop
  over 8 × 32 accumulators is past LLVM's full-unroll budget (measured: it then stays in
  memory at ~3 GFLOP/s).
- Why fastmath={"contract"} and nothing else: `contract` lets LLVM fuse each multiply and add
  into one FMA (one rounding instead of two). Each accumulator is still summed in t order, so
  the result is as accurate as the plain loop. `reassoc` (part of fastmath=True) would let
  LLVM vectorise the d_k reduction instead, which breaks the register tile, and
  `nnan`/`ninf` would allow NaN and inf handling to be optimised away. NaN in Q or K must
  reach S, because the harness's agreement check has to see it.

The one Numba setting the kernel relies on, SLP vectorisation, is switched on by the backend
itself and only while the kernel is called (see `_call_with_slp`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from backends.base import Backend, missing_package_reason

#: Rows of the register tile. `_tile` spells out this many accumulator rows; change both.
_TILE_ROWS = 8
#: Block of S handed to one thread at a time. Rows: a multiple of _TILE_ROWS. Columns: a
#: multiple of every panel width (32, 16, 8, 4). 64 × 256 gives 16 blocks at n = m = 512, so
#: both threads get work, while a block's 8-row strips of Q (≤ 64 KiB) stay in L2.
_BLOCK_ROWS = 64
_BLOCK_COLS = 256


@lru_cache(maxsize=None)
def _simd_bytes() -> int:
    """Bytes per K-panel row: two AVX-512 registers, or one AVX2 register.

    Asks for the CPU features Numba will compile for (NUMBA_CPU_FEATURES if set, else the
    host's), so the tile matches the registers the generated code actually has.
    """
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    features = config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return 2 * 64 if "+avx512f" in features.split(",") else 32


def _panel_width(dtype: Any) -> int:
    """W: columns per K panel, which is also the width of the register tile."""
    return _simd_bytes() // np.dtype(dtype).itemsize


@lru_cache(maxsize=None)
def _kernels() -> dict[str, Any]:
    """Compile-on-demand: numba is imported only in the worker that runs these backends.

    The helpers of the `numba` kernel are bound as module globals (hence the `global`
    statement) rather than closure variables: Numba's on-disk cache keys a function on its
    pickled closure variables, a captured dispatcher pickles differently in every process,
    and the kernel would then be recompiled (8 s) in every worker instead of once per machine.
    """
    global _register_row, _fma_row, _store_row, _tile

    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic
    from numba.np.arrayobj import make_array, populate_array
    from numba.np.numpy_support import as_dtype

    @njit(cache=True)
    def loops(q, k, s):
        # The textbook triple loop. Accumulating in s[i, j] keeps the sum in the output dtype,
        # so a float32 cell really is computed in float32.
        n, d_k = q.shape
        m = k.shape[0]
        for i in range(n):
            for j in range(m):
                s[i, j] = 0
                for t in range(d_k):
                    s[i, j] += q[i, t] * k[j, t]

    @intrinsic
    def _register_row(typingctx, like):
        """A zeroed 1-d array of W elements of like's dtype, on the stack (see module doc)."""
        width = _panel_width(as_dtype(like.dtype))
        row_type = types.Array(like.dtype, 1, "C")

        def codegen(context, builder, signature, args):
            element = context.get_data_type(like.dtype)
            # alloca_once puts the alloca in the function's entry block (where LLVM can promote
            # it to registers); zfill re-zeroes it here, at every use.
            storage = cgutils.alloca_once(builder, ir.ArrayType(element, width), zfill=True)
            itemsize = context.get_constant(types.intp, context.get_abi_sizeof(element))
            row = make_array(row_type)(context, builder)
            populate_array(
                row,
                data=builder.bitcast(storage, element.as_pointer()),
                shape=[context.get_constant(types.intp, width)],
                strides=[itemsize],
                itemsize=itemsize,
                meminfo=None,  # not reference-counted: it lives exactly as long as the frame
            )
            return row._getvalue()

        return row_type(like), codegen

    fast = {"contract"}  # FMA contraction only; see the module docstring

    @njit(fastmath=fast, inline="always")
    def _fma_row(acc, a, panel, t):
        # acc[c] += Q[i, t] * K[j0 + c, t] for the W columns of the panel: W/lanes vector FMAs.
        for c in range(acc.shape[0]):
            acc[c] += a * panel[t, c]

    @njit(inline="always")
    def _store_row(s, i, j0, acc):
        # Masked store: rows past n and the panel's zero-padded columns are dropped.
        if i < s.shape[0]:
            for c in range(min(acc.shape[0], s.shape[1] - j0)):
                s[i, j0 + c] = acc[c]

    @njit(fastmath=fast, inline="always")
    def _tile(q, panel, s, i0, j0):
        # S[i0:i0+8, j0:j0+W] = Q[i0:i0+8] · panelᵀ with the 8 × W accumulators in registers.
        n, d_k = q.shape
        last = n - 1
        # Rows past the end of Q repeat its last row; _store_row drops their results.
        r0, r1, r2, r3 = min(i0, last), min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last)
        r4, r5, r6, r7 = min(i0 + 4, last), min(i0 + 5, last), min(i0 + 6, last), min(i0 + 7, last)
        a0, a1, a2, a3 = _register_row(q), _register_row(q), _register_row(q), _register_row(q)
        a4, a5, a6, a7 = _register_row(q), _register_row(q), _register_row(q), _register_row(q)
        for t in range(d_k):
            _fma_row(a0, q[r0, t], panel, t)
            _fma_row(a1, q[r1, t], panel, t)
            _fma_row(a2, q[r2, t], panel, t)
            _fma_row(a3, q[r3, t], panel, t)
            _fma_row(a4, q[r4, t], panel, t)
            _fma_row(a5, q[r5, t], panel, t)
            _fma_row(a6, q[r6, t], panel, t)
            _fma_row(a7, q[r7, t], panel, t)
        _store_row(s, i0, j0, a0)
        _store_row(s, i0 + 1, j0, a1)
        _store_row(s, i0 + 2, j0, a2)
        _store_row(s, i0 + 3, j0, a3)
        _store_row(s, i0 + 4, j0, a4)
        _store_row(s, i0 + 5, j0, a5)
        _store_row(s, i0 + 6, j0, a6)
        _store_row(s, i0 + 7, j0, a7)

    @njit(cache=True, parallel=True, fastmath=fast)
    def blocked(q, k, kp, s):
        # kp: uninitialised (ceil(m / W), d_k, W) buffer for the K panels; s: the (n, m) output.
        n, d_k = q.shape
        m = k.shape[0]
        n_panels, _, width = kp.shape

        # 1. Pack: kp[p, t, c] = K[p·W + c, t], zero past the last row of K.
        for p in prange(n_panels):
            for c in range(width):
                j = p * width + c
                if j < m:
                    for t in range(d_k):
                        kp[p, t, c] = k[j, t]
                else:
                    for t in range(d_k):
                        kp[p, t, c] = 0

        # 2. Multiply, one block of S per parallel iteration.
        row_blocks = (n + _BLOCK_ROWS - 1) // _BLOCK_ROWS
        col_blocks = (m + _BLOCK_COLS - 1) // _BLOCK_COLS
        for block in prange(row_blocks * col_blocks):
            i_lo = (block // col_blocks) * _BLOCK_ROWS
            j_lo = (block % col_blocks) * _BLOCK_COLS
            i_hi = min(n, i_lo + _BLOCK_ROWS)
            j_hi = min(m, j_lo + _BLOCK_COLS)
            for j0 in range(j_lo, j_hi, width):
                panel = kp[j0 // width]  # stays in L1 while the row strips pass
                for i0 in range(i_lo, i_hi, _TILE_ROWS):
                    _tile(q, panel, s, i0, j0)

    return {"loops": loops, "blocked": blocked}


class _NumbaBackend(Backend):
    device = "cpu"
    dtypes = ("float32", "float64")
    kernel = ""

    def unavailable(self) -> str | None:
        return missing_package_reason("numba", "numba")

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(q), np.ascontiguousarray(k)

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        s = np.empty((q.shape[0], k.shape[0]), dtype=q.dtype)
        _kernels()[self.kernel](q, k, s)
        return s

    def info(self) -> dict[str, Any]:
        import numba

        threads = 1 if self.kernel == "loops" else numba.get_num_threads()
        return {"library_version": numba.__version__, "threads": threads}

    def set_threads(self, count: int | None) -> None:
        import numba

        # NUMBA_NUM_THREADS is the pool's size (and the default); set_num_threads may only
        # lower it, so asking for more raises a ValueError that names the limit.
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS if count is None else count)


class NumbaLoopsBackend(_NumbaBackend):
    name = "numba-loops"
    kernel = "loops"


class NumbaBackend(_NumbaBackend):
    """Register-tiled parallel kernel (see the module docstring)."""

    name = "numba"
    kernel = "blocked"

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        n, d_k = q.shape
        m = k.shape[0]
        width = _panel_width(q.dtype)
        s = np.empty((n, m), dtype=q.dtype)
        kp = np.empty(((m + width - 1) // width, d_k, width), dtype=q.dtype)
        _call_with_slp(_kernels()["blocked"], q, k, kp, s)
        return s


def _call_with_slp(kernel: Any, *args: Any) -> None:
    """Call `kernel` with LLVM's SLP vectoriser enabled for whatever this call compiles.

    The tile's inner loops are fully unrolled before LLVM's loop vectoriser runs, leaving 8 × W
    scalar FMAs per t; only the SLP (straight-line) vectoriser turns them back into vector
    FMAs (without it: scalar code, ~2 GFLOP/s). Numba turns SLP off by default after a
    miscompilation elsewhere (numba#8705) and reads the switch only while compiling, so it is
    switched on just for this call: a first call compiles (or loads from the cache) with it,
    later calls only pay two attribute writes, and no other jitted code in the process
    (numba-loops, anything in the same test session) is compiled with it. The on-disk cache
    does not record the switch, which is why the kernel must only ever be called through here.
    """
    from numba.core import config

    saved = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        kernel(*args)
    finally:
        config.SLP_VECTORIZE = saved
