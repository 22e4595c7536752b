"""Attention backends, each wrong in one way a real kernel gets wrong, for the property tests
(tests/test_properties.py): the agreement check must call each one `mismatch` at every point
of the sweep space where its answer differs from the right one, and `ok` where it does not.

Each computes S the way `Problem` defines it, with its one flaw; `differs(problem)` says, from
the definition alone, at which points the flaw changes S.
"""

from __future__ import annotations

import numpy as np

from qkbench.backends.base import ATTENTION_FEATURES, Backend, Problem


class _Attention(Backend):
    """Right, with the steps a wrong subclass replaces: which key head a query head reads,
    which entries are masked, and what is done to S last."""

    name = "right-attention"
    dtypes = ("float32", "float64")
    attention = frozenset(ATTENTION_FEATURES)

    def key_head_of(self, p: Problem, head: int) -> int:
        return p.key_head(head)

    def masked(self, p: Problem) -> np.ndarray:
        return p.masked()

    def finish(self, s: np.ndarray, q: np.ndarray, k: np.ndarray, p: Problem) -> np.ndarray:
        return s

    def scores(self, q, k):
        p = self.problem
        if q.ndim == 2:
            return self.finish(q @ k.T, q, k, p)
        heads = [self.key_head_of(p, h) for h in range(p.heads)]
        s = q @ np.take(k, heads, axis=1).swapaxes(-1, -2)
        if p.scaled:
            s *= s.dtype.type(p.scale)
        np.copyto(s, -np.inf, where=self.masked(p))
        return self.finish(s, q, k, p)

    @staticmethod
    def differs(p: Problem) -> bool:
        return False


class OneEntryOff(_Attention):
    """One entry of S is off by the scale of its terms, ‖q_i‖·‖k_j‖ (times the scale): the last
    key query 0 sees, of the last batch element and head — next to the mask's edge, where an
    off-by-one in a tail loop writes. Every point has that entry."""

    name = "one-entry-off"

    def finish(self, s, q, k, p):
        j = p.visible_keys(0) - 1
        if s.ndim == 2:
            qi, kj, at = q[0], k[j], (0, j)
        else:
            h = p.heads - 1
            qi, kj = q[-1, h, 0], k[-1, self.key_head_of(p, h), j]
            at = (p.batch - 1, h, 0, j)
        terms = np.linalg.norm(qi.astype(np.float64)) * np.linalg.norm(kj.astype(np.float64))
        s[at] += s.dtype.type(terms * p.scale)
        return s

    @staticmethod
    def differs(p: Problem) -> bool:
        return True


class MaskOffByOne(_Attention):
    """Masks key j only when j > i + (m − n) + 1: the first masked key of each query is computed
    instead of −inf. It exists for every query but the last, so when causal and n ≥ 2."""

    name = "mask-off-by-one"

    def masked(self, p):
        rows, cols = np.arange(p.n)[:, None], np.arange(p.m)[None, :]
        return (cols > rows + p.offset + 1) if p.causal else np.zeros((p.n, p.m), bool)

    @staticmethod
    def differs(p: Problem) -> bool:
        return p.causal and p.n >= 2


class TopLeftMask(_Attention):
    """Masks key j when j > i: the mask aligned top-left, as if the queries were the first n
    positions rather than the last. The same as bottom-right when n = m."""

    name = "top-left-mask"

    def masked(self, p):
        rows, cols = np.arange(p.n)[:, None], np.arange(p.m)[None, :]
        return (cols > rows) if p.causal else np.zeros((p.n, p.m), bool)

    @staticmethod
    def differs(p: Problem) -> bool:
        return p.causal and p.m > p.n


class InterleavedKeyHeads(_Attention):
    """Query head h reads key head h mod H_kv instead of h // (H / H_kv): groups interleaved
    rather than contiguous (a repeat where a repeat_interleave was meant). The two agree for
    every h only when H_kv = 1 or H_kv = H."""

    name = "interleaved-key-heads"

    def key_head_of(self, p, head):
        return head % p.kv_heads

    @staticmethod
    def differs(p: Problem) -> bool:
        return 1 < p.kv_heads < p.heads


WRONG = (OneEntryOff, MaskOffByOne, TopLeftMask, InterleavedKeyHeads)
