"""Backends `numba-loops` (readable single-threaded JIT loops) and `numba` (blocked parallel kernel).

Both compile with `cache=True`, so the 1-10 s of LLVM compilation is paid once per machine
and shows only in a cell's first-call column. The output is allocated by NumPy outside the
jitted code and filled in place: allocating inside njit code is slower and would make the
timed region include Numba's allocator.

How the `numba` kernel is blocked. A matrix product is fast when every value brought into a
register feeds several fused multiply-adds (FMAs). The kernel computes S in register tiles of
R rows × W columns: W = 64 bytes (16 float32 or 8 float64 columns), and R = 8 where the CPU
has AVX-512 (one 512-bit register per row) or R = 4 with AVX2 only (two 256-bit registers per
row). Either way 8 vector accumulators stay in registers for the whole d_k loop, enough
independent FMA chains to keep both FMA pipes busy, and each step t costs one or two vector
loads of K, R broadcasts of Q and 8 FMAs. Measured alternatives: two 512-bit registers per
row was no faster (float64 slower) and needs 32 registers where LLVM prefers 256-bit vectors
(Intel); with AVX2, 8 rows × 1 register was typically 10-15% slower and 6 × 2 spilled
registers.

- Packing: the W columns of a tile are W rows of K, whose values for one t lie d_k elements
  apart, so K is first copied into panels kp[p, t, c] = K[W·p + c, t], where one vector load
  fetches them; Q likewise into strips qp[b, t, r] = Q[R·b + r, t], so the R broadcasts of one
  t come from one cache line. Both copies are part of the timed call (in parallel; O((n + m)
  · d_k) next to the product's O(n·m·d_k)). Padding rows are zero and their results are
  never stored, so edge tiles run the same code as full ones.
- Cache blocking: threads take blocks of `_BLOCK_ROWS` × `_BLOCK_COLS` of S, enough blocks at
  n = m = 512 to keep both threads busy. In a block, one panel (≤ 8 KiB for d_k = 128) stays
  in L1 while the block's strips pass it.
- Accumulators are stack arrays: Numba has no fixed-size local arrays, and a NumPy array
  allocated in jitted code lives on the heap, where LLVM must assume it may alias Q and K and
  so keeps storing and reloading it. `_register_row` reserves a row on the stack instead; once
  LLVM has unrolled the W-long loops every index is a constant and the row is promoted to
  registers. The rows are spelled out in `_tile` because a loop over R × W accumulators is
  past LLVM's full-unroll budget (measured: the tile then stays in memory, ~3 GFLOP/s).
- fastmath={"contract"} and nothing else: `contract` lets LLVM fuse each multiply and add into
  one FMA (one rounding instead of two); each accumulator is still summed in t order, so the
  result is as accurate as the plain loop. `reassoc` (part of fastmath=True) lets LLVM
  vectorise the d_k reduction instead, which breaks the register tile (measured with
  fastmath=True: ~10 GFLOP/s instead of ~200), and `nnan`/`ninf` would let it assume there
  are no NaNs or infinities: a NaN in Q or K must reach S, because the harness's agreement
  check has to see it.

The one Numba setting the kernel relies on, SLP vectorisation, is switched on by the backend
itself and only while the kernel is called (see `_call_with_slp`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from qkbench.backends import numba_attention
from qkbench.backends.base import ATTENTION_FEATURES, Backend, missing_package_reason

#: Width of a K panel and of the register tile, in bytes: one AVX-512 register, two AVX2 ones.
_PANEL_BYTES = 64
#: Block of S handed to one thread at a time. Rows: a multiple of the tile's 8 or 4 rows.
#: Columns: a multiple of the panel width (16 or 8). 64 × 256 gives 16 blocks at n = m = 512.
_BLOCK_ROWS = 64
_BLOCK_COLS = 256


@cache
def _tile_rows() -> int:
    """R: rows of the register tile, 8 with AVX-512's 32 vector registers, 4 with AVX2's 16.

    Asks for the CPU features Numba will compile for (NUMBA_CPU_FEATURES if set, else the
    host's), so the tile matches the registers the generated code actually has.
    """
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    features = config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return 8 if "+avx512f" in features.split(",") else 4


def _panel_width(dtype: Any) -> int:
    """W: columns per K panel, which is also the width of the register tile."""
    return _PANEL_BYTES // np.dtype(dtype).itemsize


@cache
def _kernels() -> dict[str, Any]:
    """Compile-on-demand: numba is imported only in the worker that runs these backends.

    The helpers of the `numba` kernel are bound as module globals (hence the `global`
    statement) rather than closure variables: Numba's on-disk cache keys a function on its
    pickled closure variables, a captured dispatcher pickles differently in every process,
    and the kernel would then be recompiled (5-10 s) in every worker instead of once per
    machine.
    """
    global _register_row, _tile_rows_constant, _fma_row, _store_row, _tile, _pack

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

    @intrinsic
    def _tile_rows_constant(typingctx):
        """R as a compile-time constant, so that LLVM drops the rows a 4-row tile does not use."""

        def codegen(context, builder, signature, args):
            return context.get_constant(types.intp, _tile_rows())

        return types.intp(), codegen

    fast = {"contract"}  # FMA contraction only; see the module docstring

    @njit(fastmath=fast, inline="always")
    def _fma_row(acc, a, kp, p, t):
        # acc[c] += Q[i, t] · K[W·p + c, t] for the W columns of panel p: 64 bytes of FMAs.
        for c in range(acc.shape[0]):
            acc[c] += a * kp[p, t, c]

    @njit(inline="always")
    def _store_row(s, i, j0, acc, spill):
        # Rows past n and the panel's zero-padded columns are dropped. Only constant indices
        # may touch `acc` (one variable index would make LLVM keep the whole row in memory),
        # so a partial row is first copied to `spill`, another stack row, and stored from
        # there. Column indices are unsigned: for a signed index Numba adds a negative-index
        # check per element, which splits the row's vector store into scalar ones.
        if i < s.shape[0]:
            width = acc.shape[0]
            j = np.uint64(j0)
            if j0 + width <= s.shape[1]:
                for c in range(width):
                    s[i, j + np.uint64(c)] = acc[c]
            else:
                for c in range(width):
                    spill[c] = acc[c]
                for c in range(s.shape[1] - j0):
                    s[i, j + np.uint64(c)] = spill[c]

    @njit(fastmath=fast, inline="always")
    def _tile(qp, b, kp, p, s):
        # The R × W tile of S for strip b of Q and panel p of K, accumulated in registers: for
        # each t, the panel's 64 bytes of K times R broadcast values of Q.
        rows = _tile_rows_constant()
        a0, a1, a2, a3 = _register_row(kp), _register_row(kp), _register_row(kp), _register_row(kp)
        a4, a5, a6, a7 = _register_row(kp), _register_row(kp), _register_row(kp), _register_row(kp)
        for t in range(qp.shape[1]):
            _fma_row(a0, qp[b, t, 0], kp, p, t)
            _fma_row(a1, qp[b, t, 1], kp, p, t)
            _fma_row(a2, qp[b, t, 2], kp, p, t)
            _fma_row(a3, qp[b, t, 3], kp, p, t)
            if rows == 8:
                _fma_row(a4, qp[b, t, 4], kp, p, t)
                _fma_row(a5, qp[b, t, 5], kp, p, t)
                _fma_row(a6, qp[b, t, 6], kp, p, t)
                _fma_row(a7, qp[b, t, 7], kp, p, t)
        i0, j0 = b * rows, p * a0.shape[0]
        spill = _register_row(kp)
        _store_row(s, i0, j0, a0, spill)
        _store_row(s, i0 + 1, j0, a1, spill)
        _store_row(s, i0 + 2, j0, a2, spill)
        _store_row(s, i0 + 3, j0, a3, spill)
        if rows == 8:
            _store_row(s, i0 + 4, j0, a4, spill)
            _store_row(s, i0 + 5, j0, a5, spill)
            _store_row(s, i0 + 6, j0, a6, spill)
            _store_row(s, i0 + 7, j0, a7, spill)

    @njit(inline="always")
    def _pack(x, xp, p):
        # xp[p, t, c] = x[w·p + c, t] for the w rows of block p of x; zero past the last row.
        width = xp.shape[2]
        for c in range(width):
            row = p * width + c
            if row < x.shape[0]:
                for t in range(x.shape[1]):
                    xp[p, t, c] = x[row, t]
            else:
                for t in range(x.shape[1]):
                    xp[p, t, c] = 0

    @njit(cache=True, parallel=True, fastmath=fast)
    def blocked(q, k, qp, kp, s):
        # qp: (ceil(n / R), d_k, R) and kp: (ceil(m / W), d_k, W), uninitialised buffers for
        # the strips of Q and the panels of K; s: the (n, m) output.
        for b in prange(qp.shape[0]):
            _pack(q, qp, b)
        for p in prange(kp.shape[0]):
            _pack(k, kp, p)

        # One block of S per parallel iteration.
        strips_per_block = _BLOCK_ROWS // qp.shape[2]
        panels_per_block = _BLOCK_COLS // kp.shape[2]
        row_blocks = (qp.shape[0] + strips_per_block - 1) // strips_per_block
        col_blocks = (kp.shape[0] + panels_per_block - 1) // panels_per_block
        for block in prange(row_blocks * col_blocks):
            b_lo = (block // col_blocks) * strips_per_block
            p_lo = (block % col_blocks) * panels_per_block
            for p in range(p_lo, min(kp.shape[0], p_lo + panels_per_block)):
                # Panel p stays in L1 while the block's strips pass it.
                for b in range(b_lo, min(qp.shape[0], b_lo + strips_per_block)):
                    _tile(qp, b, kp, p, s)

    return {"loops": loops, "blocked": blocked}


def _call_with_slp(kernel: Any, *args: Any) -> None:
    """Call `kernel` with LLVM's SLP vectoriser enabled for whatever this call compiles.

    The tile's inner loops are fully unrolled before LLVM's loop vectoriser runs, leaving
    R × W scalar FMAs per t; only the SLP (straight-line) vectoriser turns them back into
    vector FMAs (without it: scalar code, ~2 GFLOP/s). Numba turns SLP off by default after a
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


class _NumbaBackend(Backend):
    device = "cpu"
    dtypes = ("float32", "float64")
    kernel = ""
    attention = frozenset(ATTENTION_FEATURES)  # issue 16: see numba_attention

    def unavailable(self) -> str | None:
        return missing_package_reason("numba", "numba")

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(q), np.ascontiguousarray(k)

    def scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        if q.ndim == 4:  # issue 16: attention cells
            return numba_attention.scores(self, q, k)
        s = np.empty((q.shape[0], k.shape[0]), dtype=q.dtype)
        _kernels()[self.kernel](q, k, s)
        return s

    def info(self) -> dict[str, Any]:
        import numba

        threads = 1 if self.kernel == "loops" else numba.get_num_threads()
        if self.problem is not None and not self.problem.plain:  # issue 16: attention cells
            return {"library_version": numba.__version__,
                    "threads": numba_attention.threads(self), **numba_attention.info(self)}
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
        if q.ndim == 4:  # issue 16: attention cells
            return numba_attention.scores(self, q, k)
        n, d_k = q.shape
        m = k.shape[0]
        rows, width = _tile_rows(), _panel_width(q.dtype)
        s = np.empty((n, m), dtype=q.dtype)
        qp = np.empty(((n + rows - 1) // rows, d_k, rows), dtype=q.dtype)
        kp = np.empty(((m + width - 1) // width, d_k, width), dtype=q.dtype)
        _call_with_slp(_kernels()["blocked"], q, k, qp, kp, s)
        return s
