"""A confidence interval for a median from order statistics, and the paired ratios it is
taken of (speed: pruned repeat k / dense repeat k).

Distribution-free: the k-th smallest of n independent draws lies below the median with
probability P(Binomial(n, 1/2) >= k), so [x_(j), x_(n-j+1)] covers the median with
probability 1 - 2 P(Binomial(n, 1/2) <= j - 1) whatever the distribution (timing noise is
skewed: a busy moment slows one repeat a lot, never speeds it up). No bootstrap, no seed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class MedianInterval:
    """The median, the interval's ends and the probability that it covers the true median."""

    median: float
    low: float
    high: float
    coverage: float
    n: int

    def to_json(self) -> dict:
        return {"median": self.median, "low": self.low, "high": self.high, "coverage": self.coverage, "n": self.n}


def order_coverage(n: int, j: int) -> float:
    """Coverage of [x_(j), x_(n-j+1)] (1-based sorted positions) for the median of n draws."""
    if not 1 <= j <= (n + 1) // 2:
        raise ValueError(f"j={j} is not a position of a symmetric interval of {n} values")
    tail = sum(math.comb(n, i) for i in range(j)) / 2**n
    return max(0.0, 1.0 - 2.0 * tail)


def median_interval(values: list[float], level: float = 0.95) -> MedianInterval:
    """The median of `values` and the narrowest symmetric order-statistic interval whose
    coverage is at least `level`; with too few values for that, min-max and the coverage it has."""
    if not values:
        raise ValueError("no values")
    ordered, n = sorted(float(v) for v in values), len(values)
    j = 1
    while j + 1 <= (n + 1) // 2 and order_coverage(n, j + 1) >= level:
        j += 1
    return MedianInterval(statistics.median(ordered), ordered[j - 1], ordered[n - j], order_coverage(n, j), n)


def repeats_for(level: float = 0.95) -> int:
    """The fewest values whose min-max interval reaches `level` (6 at 95 %)."""
    n = 1
    while order_coverage(n, 1) < level:
        n += 1
    return n


def paired_ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Ratio of each repeat's figures (the pair measured back to back, so shared noise cancels)."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} against {len(denominators)} repeats")
    return [a / b for a, b in zip(numerators, denominators)]
