"""The jitted code behind qkbench.backends.numba_backend: the plain loops and the register-tiled kernel.

Imported only in the worker that runs a numba backend (it imports Numba). Every function is
module-level and compiled with `cache=True`, so LLVM's 5-15 s run once per machine, path and
dtype; the tile geometry (qkbench.backends.numba_paths) reaches the kernel as the *type* of its last
argument, so each path is its own compiled specialisation and its own cache entry.

How the tiled kernel works. A matrix product is fast when every value brought into a
register feeds several fused multiply-adds (FMAs). S is computed in register tiles of R rows
× W columns (R and W from the path's geometry):

- Packing: the W columns of a tile are W rows of K, whose values for one t lie d_k elements
  apart, so K is first copied into panels kp[p, t, c] = K[W·p + c, t], where one vector load
  fetches them; Q likewise into strips qp[b, t, r] = Q[R·b + r, t], so the R broadcasts of
  one t come from one cache line. Both copies are part of the timed call (in parallel; O((n +
  m) · d_k) next to the product's O(n·m·d_k)). Padding rows are zero and their results are
  never stored, so edge tiles run the same code as full ones.
- Cache blocking: threads take blocks of block_rows × block_cols of S. In a block, one panel
  stays in L1 while the block's strips pass it.
- Accumulators are stack arrays: Numba has no fixed-size local arrays, and a NumPy array
  allocated in jitted code lives on the heap, where LLVM must assume it may alias Q and K and
  so keeps storing and reloading it. `_register_row` reserves a row on the stack instead; once
  LLVM has unrolled the W-long loops every index is a constant and the row is promoted to
  registers. The rows are spelled out in `_tile` because a loop over R × W accumulators is
  past LLVM's full-unroll budget (measured: the tile then stays in memory, ~3 GFLOP/s); rows
  past the path's R are cut by a constant condition, which LLVM removes.
- fastmath={"contract"} and nothing else: `contract` lets LLVM fuse each multiply and add into
  one FMA (one rounding instead of two); each accumulator is still summed in t order, so the
  result is as accurate as the plain loop. `reassoc` (part of fastmath=True) lets LLVM
  vectorise the d_k reduction instead, which breaks the register tile (measured with
  fastmath=True: ~10 GFLOP/s instead of ~200), and `nnan`/`ninf` would let it assume there
  are no NaNs or infinities: a NaN in Q or K must reach S, because the harness's agreement
  check has to see it.

Caching. Numba's cache index keys every entry on the signature and on
`codegen.magic_tuple()` = (target triple, CPU name, CPU features) — numba/core/caching.py,
`_CacheImpl._index_key` — so code compiled for one ISA is never loaded on another; the
geometry type in the signature does the same for paths. The index hashes only the jitted
function's own bytecode, not its helpers': after editing a helper, clear the cache
(`__pycache__/*.nbi`, `*.nbc` beside this file). It does not record the SLP switch either,
hence `call_with_slp`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import NativeValue, intrinsic, models, register_model, typeof_impl, unbox
from numba.np.arrayobj import make_array, populate_array
from numba.np.numpy_support import as_dtype

from qkbench.backends.numba_paths import Geometry


class GeometryType(types.Type):
    """Numba type of a Geometry: the geometry lives in the type, the value carries nothing."""

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry
        super().__init__(name=f"Geometry({geometry.name}, {geometry.rows}x{geometry.tile_bytes}B,"
                              f" block {geometry.block_rows}x{geometry.block_cols},"
                              f" {geometry.vector_bits or 'any'}-bit)")


@typeof_impl.register(Geometry)
def _typeof_geometry(value: Geometry, context: Any) -> GeometryType:
    return GeometryType(value)


register_model(GeometryType)(models.OpaqueModel)


@unbox(GeometryType)
def _unbox_geometry(typ: GeometryType, obj: Any, c: Any) -> NativeValue:
    return NativeValue(c.context.get_dummy_value())


@njit(cache=True)
def loops(q, k, s):
    # The textbook triple loop. Accumulating in s[i, j] keeps the sum in the output dtype, so
    # a float32 cell really is computed in float32.
    n, d_k = q.shape
    m = k.shape[0]
    for i in range(n):
        for j in range(m):
            s[i, j] = 0
            for t in range(d_k):
                s[i, j] += q[i, t] * k[j, t]


@intrinsic
def _constants(typingctx, geometry):
    """(R, block_rows, block_cols) as compile-time constants, so LLVM folds them; also asks
    LLVM for the path's vector width in the function being compiled (the parallel block
    loop, where the tile ends up)."""
    g = geometry.geometry
    tuple_type = types.UniTuple(types.intp, 3)

    def codegen(context, builder, signature, args):
        if g.vector_bits:
            # A string attribute; llvmlite's AttributeSet only admits enum ones, hence set.add.
            set.add(builder.function.attributes, f'"prefer-vector-width"="{g.vector_bits}"')
        values = [context.get_constant(types.intp, v)
                  for v in (g.rows, g.block_rows, g.block_cols)]
        return context.make_tuple(builder, tuple_type, values)

    return tuple_type(geometry), codegen


@intrinsic
def _register_row(typingctx, like, geometry):
    """A zeroed 1-d array of W elements of like's dtype, on the stack (see module doc)."""
    width = geometry.geometry.columns(as_dtype(like.dtype).itemsize)
    row_type = types.Array(like.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        element = context.get_data_type(like.dtype)
        # alloca_once puts the alloca in the function's entry block (where LLVM can promote it
        # to registers); zfill re-zeroes it here, at every use.
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

    return row_type(like, geometry), codegen


_FAST = {"contract"}  # FMA contraction only; see the module docstring


@njit(fastmath=_FAST, inline="always")
def _fma_row(acc, a, kp, p, t):
    # acc[c] += Q[i, t] · K[W·p + c, t] for the W columns of panel p.
    for c in range(acc.shape[0]):
        acc[c] += a * kp[p, t, c]


@njit(inline="always")
def _store_row(s, i, j0, acc, spill):
    # Rows past n and the panel's zero-padded columns are dropped. Only constant indices may
    # touch `acc` (one variable index would make LLVM keep the whole row in memory), so a
    # partial row is first copied to `spill`, another stack row, and stored from there. Column
    # indices are unsigned: for a signed index Numba adds a negative-index check per element,
    # which splits the row's vector store into scalar ones.
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


@njit(fastmath=_FAST, inline="always")
def _tile(qp, b, kp, p, s, g):
    # The R × W tile of S for strip b of Q and panel p of K, accumulated in registers: for
    # each t, the panel's W values of K times R broadcast values of Q. R ≤ 8 for every path.
    rows = _constants(g)[0]
    a0, a1, a2, a3 = _register_row(kp, g), _register_row(kp, g), _register_row(kp, g), \
        _register_row(kp, g)
    a4, a5, a6, a7 = _register_row(kp, g), _register_row(kp, g), _register_row(kp, g), \
        _register_row(kp, g)
    for t in range(qp.shape[1]):
        _fma_row(a0, qp[b, t, 0], kp, p, t)
        _fma_row(a1, qp[b, t, 1], kp, p, t)
        _fma_row(a2, qp[b, t, 2], kp, p, t)
        _fma_row(a3, qp[b, t, 3], kp, p, t)
        if rows > 4:
            _fma_row(a4, qp[b, t, 4], kp, p, t)
            _fma_row(a5, qp[b, t, 5], kp, p, t)
        if rows > 6:
            _fma_row(a6, qp[b, t, 6], kp, p, t)
            _fma_row(a7, qp[b, t, 7], kp, p, t)
    i0, j0 = b * rows, p * a0.shape[0]
    spill = _register_row(kp, g)
    _store_row(s, i0, j0, a0, spill)
    _store_row(s, i0 + 1, j0, a1, spill)
    _store_row(s, i0 + 2, j0, a2, spill)
    _store_row(s, i0 + 3, j0, a3, spill)
    if rows > 4:
        _store_row(s, i0 + 4, j0, a4, spill)
        _store_row(s, i0 + 5, j0, a5, spill)
    if rows > 6:
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


@njit(cache=True, parallel=True, fastmath=_FAST)
def blocked(q, k, qp, kp, s, g):
    # qp: (ceil(n / R), d_k, R) and kp: (ceil(m / W), d_k, W), uninitialised buffers for the
    # strips of Q and the panels of K; s: the (n, m) output; g: the path's Geometry.
    for b in prange(qp.shape[0]):
        _pack(q, qp, b)
    for p in prange(kp.shape[0]):
        _pack(k, kp, p)

    # One block of S per parallel iteration.
    _, block_rows, block_cols = _constants(g)
    strips_per_block = block_rows // qp.shape[2]
    panels_per_block = block_cols // kp.shape[2]
    row_blocks = (qp.shape[0] + strips_per_block - 1) // strips_per_block
    col_blocks = (kp.shape[0] + panels_per_block - 1) // panels_per_block
    for block in prange(row_blocks * col_blocks):
        b_lo = (block // col_blocks) * strips_per_block
        p_lo = (block % col_blocks) * panels_per_block
        for p in range(p_lo, min(kp.shape[0], p_lo + panels_per_block)):
            # Panel p stays in L1 while the block's strips pass it.
            for b in range(b_lo, min(qp.shape[0], b_lo + strips_per_block)):
                _tile(qp, b, kp, p, s, g)


def call_with_slp(kernel: Any, *args: Any) -> None:
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


def ready_target() -> None:
    """Numba's one-time set-up of its CPU target in this process (its registries of typed
    functions), which the first dispatch of any jitted function would otherwise do."""
    from numba.core.registry import cpu_target

    cpu_target.target_context.refresh()
