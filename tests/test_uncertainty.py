"""The table's uncertainty on constructed cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structprune.evaluation.uncertainty import (
    average_stderr,
    mean_stderr,
    paired_accuracy_difference,
    paired_perplexity_difference,
    perplexity_interval,
)


def test_mean_stderr_is_lm_evals_sample_formula():
    values = [1, 0, 1, 1]
    assert mean_stderr(values) == pytest.approx(np.std(values, ddof=1) / 2)
    assert average_stderr([0.3, 0.4]) == pytest.approx(0.25)


def test_identical_rows_are_not_significantly_different():
    rng = np.random.default_rng(1)
    items = {"piqa": rng.integers(0, 2, 50), "arc_easy": rng.integers(0, 2, 40)}
    result = paired_accuracy_difference(items, {k: v.copy() for k, v in items.items()})
    assert result.difference == 0 and result.low == 0 == result.high and result.p_value == 1.0
    assert not result.significant


def test_a_row_right_on_every_item_the_other_gets_wrong_is_significant():
    a = {"piqa": np.ones(40), "boolq": np.ones(30)}
    b = {"piqa": np.zeros(40), "boolq": np.zeros(30)}
    result = paired_accuracy_difference(a, b)
    assert result.difference == 1.0 and result.low == 1.0 and result.significant and result.p_value == 0.0


def test_a_one_item_difference_in_thirty_is_noise():
    b = {"piqa": np.r_[np.ones(15), np.zeros(15)]}
    a = {"piqa": b["piqa"].copy()}
    a["piqa"][20] = 1  # one more item right
    result = paired_accuracy_difference(a, b, seed=3)
    assert result.difference == pytest.approx(1 / 30) and result.low <= 0 <= result.high and not result.significant


def test_pairing_finds_a_consistent_small_gain_that_unpaired_errors_would_hide():
    rng = np.random.default_rng(0)
    b = {"hellaswag": rng.integers(0, 2, 400).astype(float)}
    a = {"hellaswag": b["hellaswag"].copy()}
    wrong = np.flatnonzero(a["hellaswag"] == 0)[:24]
    a["hellaswag"][wrong] = 1  # 6 points better, never worse
    result = paired_accuracy_difference(a, b)
    unpaired = math.hypot(mean_stderr(a["hellaswag"]), mean_stderr(b["hellaswag"]))
    assert result.difference == pytest.approx(0.06) and result.significant
    assert result.difference < 2 * unpaired  # within two unpaired standard errors: only pairing sees it


def test_rows_on_different_items_are_refused():
    with pytest.raises(ValueError, match="different items"):
        paired_accuracy_difference({"piqa": np.ones(3)}, {"piqa": np.ones(4)})


def test_perplexity_interval_brackets_the_point_and_collapses_for_equal_windows():
    nll = np.log([10.0] * 20)
    low, high = perplexity_interval(nll)
    assert low == pytest.approx(10.0) and high == pytest.approx(10.0)
    spread = np.random.default_rng(0).normal(3.0, 0.5, 64)
    low, high = perplexity_interval(spread)
    assert low < math.exp(spread.mean()) < high


def test_paired_perplexity_sees_a_uniform_shift_and_not_a_permutation():
    nll = np.random.default_rng(2).normal(3.0, 0.5, 64)
    shifted = paired_perplexity_difference(nll + 0.01, nll)
    assert shifted.difference == pytest.approx(0.01) and shifted.significant
    shuffled = paired_perplexity_difference(nll, np.random.default_rng(5).permutation(nll))
    assert shuffled.difference == pytest.approx(0.0, abs=1e-12) and not shuffled.significant


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(7)
    a, b = {"piqa": rng.integers(0, 2, 30)}, {"piqa": rng.integers(0, 2, 30)}
    assert paired_accuracy_difference(a, b, seed=4) == paired_accuracy_difference(a, b, seed=4)
