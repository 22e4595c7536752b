"""Attention backends a test needs: one that copies K per query head (and says so), and
wrong ones the agreement check must catch (a wrong key head, a mask left out, no scale)."""

from __future__ import annotations

import numpy as np

from qkbench.backends.base import ATTENTION_FEATURES, Backend


class RepeatedKv(Backend):
    """Correct, but materialises K H/H_kv times, as a library without grouped matmul would."""

    name = "repeated-kv"
    dtypes = ("float32", "float64")
    attention = frozenset(ATTENTION_FEATURES)
    key_head_of = staticmethod(lambda problem, h: problem.key_head(h))

    def scores(self, q, k):
        if q.ndim == 2:
            return q @ k.T
        p = self.problem
        heads = [self.key_head_of(p, h) for h in range(p.heads)]
        s = q @ np.take(k, heads, axis=1).swapaxes(-1, -2)
        if p.scaled:
            s *= s.dtype.type(p.scale)
        np.copyto(s, -np.inf, where=p.masked())
        return s

    def info(self):
        grouped = self.problem is not None and "grouped" in self.problem.needs()
        return {"kv_materialised": True} if grouped else {}


class WrongKeyHead(RepeatedKv):
    """Query head h reads key head h mod H_kv: interleaved groups, a classic GQA bug."""

    name = "wrong-key-head"
    key_head_of = staticmethod(lambda problem, h: h % problem.kv_heads)


class MaskLeftOut(RepeatedKv):
    """Takes causal cells but never masks them."""

    name = "mask-left-out"

    def scores(self, q, k):
        p = self.problem
        s = q @ np.take(k, [p.key_head(h) for h in range(p.heads)], axis=1).swapaxes(-1, -2)
        return s * s.dtype.type(p.scale)


class ScaleLeftOut(RepeatedKv):
    """Takes scaled cells but returns Q·Kᵀ unscaled."""

    name = "scale-left-out"

    def scores(self, q, k):
        p = self.problem
        s = q @ np.take(k, [p.key_head(h) for h in range(p.heads)], axis=1).swapaxes(-1, -2)
        np.copyto(s, -np.inf, where=p.masked())
        return s


from tests.plugins.fake_gpu import FakeGpu  # noqa: E402 (after the CPU plugins it reuses)


class FakeGpuAttention(RepeatedKv, FakeGpu):
    """A GPU-shaped backend (device hooks, 1 MiB of "free" memory) that takes attention cells."""

    name = "fake-gpu-attention"
    device = "gpu"
    dtypes = ("float32",)
