"""The penalised L1 step detector: exact on clean steps, silent on flat series, and the same
answer whatever the unit or scale of the values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qkbench.analysis.l1_steps import find_steps_l1

series_length = st.integers(min_value=6, max_value=80)


@given(n=series_length, level=st.floats(1e-9, 1e3), data=st.data())
@settings(max_examples=80, deadline=None)
def test_a_clean_step_is_found_exactly_where_it_is(n, level, data):
    at = data.draw(st.integers(3, n - 3))
    change = data.draw(st.sampled_from([-0.5, -0.2, -0.08, 0.08, 0.2, 0.5, 2.0]))
    noise = np.random.default_rng(n).normal(0, 0.002, n)
    values = level * np.exp(noise + np.where(np.arange(n) >= at, math.log1p(change), 0.0))
    [(index, before, after)] = find_steps_l1(values, 0.05, 3)
    assert index == at
    assert after / before - 1 == pytest.approx(change, abs=0.02 * (1 + change))


@given(n=series_length, seed=st.integers(0, 2**16), scale=st.floats(1e-6, 1e6))
@settings(max_examples=60, deadline=None)
def test_steps_respect_the_rules_and_ignore_the_unit(n, seed, scale):
    rng = np.random.default_rng(seed)
    values = np.exp(rng.normal(0, 0.05, n) + np.repeat(rng.normal(0, 0.2, 4), -(-n // 4))[:n])
    steps = find_steps_l1(values, 0.05, 3)
    scaled = find_steps_l1(values * scale, 0.05, 3)
    assert [s[0] for s in steps] == [s[0] for s in scaled]
    bounds = [0] + [s[0] for s in steps] + [n]
    assert all(b - a >= 3 for a, b in zip(bounds, bounds[1:]))  # min_runs on every side
    assert all(abs(math.log(after / before)) >= math.log1p(0.05) - 1e-12
               for _, before, after in steps)


@given(n=series_length, value=st.floats(1e-9, 1e9))
@settings(max_examples=30, deadline=None)
def test_a_constant_series_has_no_step(n, value):
    assert find_steps_l1([value] * n, 0.0, 3) == []


def test_one_wild_run_or_a_low_weight_stretch_makes_no_step():
    values = [1.0, 1.01, 0.99, 1.0, 3.0, 1.0, 1.01, 0.99, 1.0, 1.0]
    assert find_steps_l1(values, 0.05, 3) == []
    # Three runs off by 30%, but with intervals 50x wider than the rest: they count for little.
    values = [1.0, 1.01, 0.99, 1.0, 1.3, 1.31, 1.29, 1.0, 1.01, 0.99, 1.0, 1.0]
    weights = [1.0] * 4 + [0.02] * 3 + [1.0] * 5
    assert find_steps_l1(values, 0.05, 3, weights) == []
    assert [s[0] for s in find_steps_l1(values, 0.05, 3)] == [4, 7]
