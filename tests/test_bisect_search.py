"""The bisection of `qkbench find` without git or measuring (qkbench.bisect.search): every
position of the first slower commit is found, in about log₂ N decisions, with skips as
`git bisect skip` treats them."""

from __future__ import annotations

import math

import pytest

from qkbench.bisect.search import NOT_SLOWER, SKIP, SLOWER, Bisection


def _search(count, first_bad, skipped=(), bad_is_slow=True):
    bisection, asked = Bisection(count), []
    while (index := bisection.next()) is not None:
        asked.append(index)
        if index in skipped:
            bisection.record(index, SKIP)
        elif index >= first_bad and bad_is_slow:
            bisection.record(index, SLOWER)
        else:
            bisection.record(index, NOT_SLOWER)
    return bisection, asked


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 15, 16, 17, 100])
def test_every_first_bad_commit_is_found_in_about_log2_n_decisions(count):
    for first_bad in range(count):
        bisection, asked = _search(count, first_bad)
        assert bisection.first_bad() == first_bad
        assert len(asked) == len(set(asked))  # no commit is tested twice
        extra = 1 if first_bad == count - 1 else 0  # BAD itself is confirmed
        assert len(asked) <= max(1, math.ceil(math.log2(count))) + extra, (first_bad, asked)


def test_fifteen_commits_after_good_take_at_most_five_runs():
    # The target: a repository of 16 commits (GOOD and 15 after it).
    assert max(len(_search(15, k)[1]) for k in range(15)) <= 5


def test_a_skipped_commit_is_stepped_around():
    bisection, asked = _search(15, first_bad=10, skipped={6})
    assert asked[0] == 6 and bisection.first_bad() == 10  # the first midpoint is skipped


def test_skips_next_to_the_answer_leave_candidates():
    bisection, _ = _search(8, first_bad=5, skipped={4})
    assert bisection.first_bad() is None
    assert bisection.candidates() == [4, 5]


def test_bad_not_slower_means_no_answer():
    bisection, asked = _search(8, first_bad=99, bad_is_slow=False)
    assert asked[-1] == 7 and bisection.first_bad() is None and bisection.candidates() == []


def test_bad_that_cannot_be_tested_is_never_claimed():
    bisection, _ = _search(4, first_bad=3, skipped={3})
    assert bisection.first_bad() is None and bisection.candidates() == [3]
