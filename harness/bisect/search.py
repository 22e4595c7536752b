"""The bisection itself, with no git and no measuring: which commit to test next, what
an answer means, and when the search is over (like `git bisect`, `skip` included).

The candidates are the commits after GOOD up to BAD, oldest first. GOOD is known good; BAD is
assumed bad and tested only when the search ends on it, so a range of N commits takes about
log₂ N decisions, one more when the answer is BAD itself (or BAD turns out not slower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SLOWER, NOT_SLOWER, SKIP = "slower", "not slower", "skip"


@dataclass
class Bisection:
    """The state of one search over `count` candidates (indices 0 … count-1; count-1 is BAD)."""

    count: int
    good: int = -1  # the newest index known not slower (-1: GOOD itself)
    bad: int = -1  # the oldest index known or assumed slower; set to BAD in __post_init__
    bad_tested: bool = False
    skipped: set[int] = field(default_factory=set)
    bad_not_slower: bool = False

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("a bisection needs at least one commit after GOOD")
        self.bad = self.count - 1

    @property
    def expected_runs(self) -> int:
        """Decisions a search needs without skips: ⌈log₂ N⌉ (N = 1: the one commit, BAD)."""
        return max(1, math.ceil(math.log2(self.count)))

    @property
    def left(self) -> int:
        """How many commits can still be the first slower one."""
        return 0 if self.bad_not_slower else self.bad - self.good

    def next(self) -> int | None:
        """The candidate to test next, or None when the search is over."""
        if self.bad_not_slower:
            return None
        between = [i for i in range(self.good + 1, self.bad) if i not in self.skipped]
        if between:
            middle = (self.good + self.bad) / 2
            return min(between, key=lambda i: (abs(i - middle), i))
        last = self.count - 1
        if self.bad == last and not self.bad_tested and last not in self.skipped:
            return last  # the search ended on BAD: confirm it is slower at all
        return None

    def record(self, index: int, outcome: str) -> None:
        if outcome == SKIP:
            self.skipped.add(index)
        elif outcome == SLOWER:
            self.bad = min(self.bad, index)
            self.bad_tested = self.bad_tested or index == self.bad
        elif outcome == NOT_SLOWER:
            if index == self.count - 1:
                self.bad_not_slower = True
            self.good = max(self.good, index)
        else:
            raise ValueError(f"unknown outcome {outcome!r}")

    def first_bad(self) -> int | None:
        """The answer, when the search pinned one commit: the oldest tested slower one with
        its predecessor tested not slower (or GOOD)."""
        if self.bad_not_slower or not self.bad_tested or self.next() is not None:
            return None
        return self.bad if not self.candidates()[:-1] else None

    def candidates(self) -> list[int]:
        """Where the first slower commit can still be: the skipped commits between the newest
        good and the oldest bad one, and that bad one (every one of them, over a search ended
        by skips). Empty when BAD was not slower."""
        if self.bad_not_slower:
            return []
        return [i for i in range(self.good + 1, self.bad) if i in self.skipped] + [self.bad]
