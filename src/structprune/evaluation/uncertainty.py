"""How sure the comparison table is: standard errors, bootstrap intervals and paired tests.

Zero-shot accuracy of a task is the mean of per-item scores (0/1); its standard error is
lm-eval's ``mean_stderr`` (sample standard deviation over sqrt(n)). The table's average is
the unweighted mean over tasks, so its standard error is sqrt(sum of squared task errors)
over the number of tasks (tasks are independent samples).

Two rows evaluated on the same items are compared by a paired bootstrap: each task's items
are resampled with replacement, the same draw for both rows, and the difference of the
average accuracy is recomputed; the 95 % percentile interval and a two-sided p-value
(twice the smaller tail mass at zero) come from those replicates. A difference whose
interval covers zero is "not significant at 95 %". Perplexity is exp(mean window NLL) over
equal-length windows, so windows are resampled the same way: an interval for one row, and
the paired difference of mean NLL (log-perplexity) between two rows on the same windows.
Every resampling is seeded: the same inputs give the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ITERATIONS = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """a - b with its bootstrap interval and two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        return not (self.low <= 0.0 <= self.high)


def mean_stderr(values) -> float:
    """Standard error of a mean (sample standard deviation / sqrt(n)), as lm-eval's."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan")
    return float(values.std(ddof=1) / math.sqrt(values.size))


def average_stderr(stderrs) -> float:
    """Standard error of the unweighted mean of independent estimates."""
    stderrs = np.asarray(list(stderrs), dtype=np.float64)
    return float(math.sqrt(float((stderrs**2).sum())) / stderrs.size)


def _task_draws(sizes: list[int], iterations: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=(iterations, n)) for n in sizes]


def _summary(point: float, replicates: np.ndarray) -> PairedDifference:
    low, high = np.percentile(replicates, [2.5, 97.5])
    tail = min(float((replicates <= 0).mean()), float((replicates >= 0).mean()))
    return PairedDifference(float(point), float(low), float(high), min(1.0, 2 * tail))


def paired_accuracy_difference(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], iterations: int = ITERATIONS, seed: int = 0,
) -> PairedDifference:
    """Average accuracy (mean over tasks of the mean item score) of `a` minus `b`; both map
    task -> per-item scores on the same items in the same order."""
    tasks = sorted(a)
    if sorted(b) != tasks:
        raise ValueError(f"paired comparison needs the same tasks: {tasks} vs {sorted(b)}")
    for task in tasks:
        if np.shape(a[task]) != np.shape(b[task]):
            raise ValueError(f"task {task}: the rows were scored on different items")
    diffs = [np.asarray(a[t], dtype=np.float64) - np.asarray(b[t], dtype=np.float64) for t in tasks]
    point = float(np.mean([d.mean() for d in diffs]))
    draws = _task_draws([d.size for d in diffs], iterations, seed)
    replicates = np.mean([d[idx].mean(axis=1) for d, idx in zip(diffs, draws)], axis=0)
    return _summary(point, replicates)


def perplexity_interval(window_nll, iterations: int = ITERATIONS, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of exp(mean NLL) over equal-length windows."""
    nll = np.asarray(window_nll, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, nll.size, size=(iterations, nll.size))
    low, high = np.percentile(nll[idx].mean(axis=1), [2.5, 97.5])
    return math.exp(low), math.exp(high)


def paired_perplexity_difference(a_nll, b_nll, iterations: int = ITERATIONS, seed: int = 0) -> PairedDifference:
    """log PPL(a) - log PPL(b) (= mean NLL difference) over the same windows, with its
    paired bootstrap interval and p-value."""
    a_nll, b_nll = np.asarray(a_nll, dtype=np.float64), np.asarray(b_nll, dtype=np.float64)
    if a_nll.shape != b_nll.shape:
        raise ValueError("paired perplexity needs the same windows")
    d = a_nll - b_nll
    idx = np.random.default_rng(seed).integers(0, d.size, size=(iterations, d.size))
    return _summary(float(d.mean()), d[idx].mean(axis=1))
