"""Attention cells (batch × heads, grouped key heads, causal, scaled) for the numba backends.

Semantics: `qkbench.backends.base.Problem`. Both kernels index the key head of query head h
as h // (H / H_kv) directly, so K is never repeated, and run in parallel over the B·H
(batch, head) pairs: a prefill cell has B·H ≥ 12 of them, enough for every core, while the
blocks of one small head (decode: n of 1-16 rows) would not be.

- `numba-loops`: the textbook triple loop of the 2-D kernel, per pair, in a prange. A causal
  row stops at its last visible key, so masked entries cost no multiply-adds; they are set to
  −inf. It accumulates in the output dtype, like the 2-D loop.
- `numba`: the backend's own blocked 2-D kernel (numba_backend.py) per pair, each call
  parallel inside; one parallel pass then copies the head into S, scaling and masking on the
  way. That kernel computes masked entries too: FLOP/s count unmasked entries only, so a
  causal cell shows the work it wasted as a lower rate, as it should.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np


@cache
def _kernels() -> dict[str, Any]:
    """Compiled on first use, in the worker that runs the backend (numba is imported there)."""
    from numba import njit, prange

    @njit(cache=True, parallel=True)
    def loops(q, k, s, group, causal, offset, scaled, scale):
        batch, heads, n, d_k = q.shape
        m = k.shape[2]
        for pair in prange(batch * heads):
            b, h = pair // heads, pair % heads
            g = h // group
            for i in range(n):
                visible = min(m, max(0, i + offset + 1)) if causal else m
                for j in range(visible):
                    s[b, h, i, j] = 0
                    for t in range(d_k):
                        s[b, h, i, j] += q[b, h, i, t] * k[b, g, j, t]
                    if scaled:
                        s[b, h, i, j] *= scale
                for j in range(visible, m):
                    s[b, h, i, j] = -np.inf

    @njit(cache=True, parallel=True)
    def finish_head(dst, src, causal, offset, scaled, scale):
        # dst[i, j] = src[i, j] · scale, or −inf past query i's last visible key.
        n, m = src.shape
        for i in prange(n):
            visible = min(m, max(0, i + offset + 1)) if causal else m
            for j in range(visible):
                dst[i, j] = src[i, j] * scale if scaled else src[i, j]
            for j in range(visible, m):
                dst[i, j] = -np.inf

    return {"loops": loops, "finish_head": finish_head}


def scores(backend: Any, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """S (B, H, n, m) for 4-D inputs, by `backend`'s kernel ("loops" or "blocked")."""
    problem = backend.problem
    assert problem is not None, "set_problem comes before an attention cell"
    s = np.empty(problem.s_shape(), dtype=q.dtype)
    scale = q.dtype.type(problem.scale)  # in the cell's dtype: a float32 cell stays float32
    args = (problem.causal, problem.offset, problem.scaled, scale)
    if backend.kernel == "loops":
        _kernels()["loops"](q, k, s, problem.group, *args)
        return s
    finish_head = _kernels()["finish_head"]
    for b in range(problem.batch):
        for h in range(problem.heads):
            head = backend.scores(q[b, h], k[b, problem.key_head(h)])  # the 2-D kernel
            finish_head(s[b, h], head, *args)
    return s


def threads(backend: Any) -> int:
    """Threads an attention cell computes on: every kernel here is parallel."""
    import numba

    return numba.get_num_threads()


def info(backend: Any) -> dict[str, Any]:
    """Extra facts for an attention cell's row: K is indexed per key head, never repeated."""
    problem = backend.problem
    return {"kv_materialised": False} if "grouped" in problem.needs() else {}
