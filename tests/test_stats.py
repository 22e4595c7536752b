"""The median's confidence interval: exact ranks, and real 95% coverage on skewed data."""

import numpy as np
import pytest

from qkbench.measure.stats import median, median_ci, median_ci_ranks


@pytest.mark.parametrize("n, ranks", [(6, (1, 6)), (10, (2, 9)), (20, (6, 15)),
                                      (50, (18, 33)), (100, (40, 61))])
def test_ranks_match_the_binomial_tables(n, ranks):
    assert median_ci_ranks(n) == ranks


def test_too_few_samples_have_no_interval():
    assert median_ci_ranks(5) is None
    assert median_ci([1.0, 2.0, 3.0]) is None


def test_normal_approximation_joins_the_exact_ranks_smoothly():
    exact = median_ci_ranks(200)
    approx = median_ci_ranks(201)
    assert abs(exact[0] - approx[0]) <= 1


@pytest.mark.parametrize("n", [10, 40, 500])
def test_coverage_is_at_least_95_percent_on_skewed_timings(n):
    rng = np.random.default_rng(7)
    true_median = 1.0  # lognormal(0, s) has median exp(0)
    trials, covered = 2000, 0
    for _ in range(trials):
        ci = median_ci(list(rng.lognormal(0.0, 0.5, size=n)))
        covered += ci.low <= true_median <= ci.high
    assert covered / trials >= 0.94  # 95% nominal, minus Monte-Carlo slack


def test_median_and_relative_width():
    ci = median_ci([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert ci.median == median(range(1, 11)) == 5.5
    assert (ci.low, ci.high) == (2.0, 9.0)
    assert ci.rel_halfwidth == pytest.approx(7.0 / 11.0)
