"""Known answers of the speed ratios' interval (order statistics of the paired per-repeat
ratios) and of the bounds the weights put on them (no timing here)."""

from __future__ import annotations

import itertools
import math

import pytest
from tiny import HEAD_DIM, HIDDEN, INTERMEDIATE, tiny_llama

from structprune.evaluation.bounds import (
    Cost,
    decode_bound,
    is_fault,
    model_cost,
    prefill_bound,
    prefill_macs,
    tensor_cost,
)
from structprune.evaluation.medianci import median_interval, order_coverage, paired_ratios, repeats_for


def test_six_repeats_give_min_max_at_96_9_percent():
    interval = median_interval([1.3, 1.1, 1.25, 1.2, 0.9, 1.22])
    assert (interval.low, interval.high, interval.median) == (0.9, 1.3, pytest.approx(1.21))
    assert interval.coverage == 1 - 2 * 0.5**6 == pytest.approx(0.96875) and interval.n == 6
    assert repeats_for(0.95) == 6


@pytest.mark.parametrize(("n", "j", "coverage"), [
    (5, 1, 1 - 2 / 32),                    # too few for 95 %: min-max, and the coverage it has
    (8, 1, 1 - 2 / 256),                   # the 2nd and 7th would cover 93.0 % only
    (9, 2, 1 - 2 * (1 + 9) / 512),         # 96.1 %
    (12, 3, 1 - 2 * (1 + 12 + 66) / 4096),  # 96.1 %: llama.cpp's default
    (1, 1, 0.0),
])
def test_the_interval_is_the_widest_j_reaching_95_percent(n, j, coverage):
    interval = median_interval([float(v) for v in range(n, 0, -1)])  # unsorted on purpose
    assert (interval.low, interval.high) == (j, n - j + 1) and interval.coverage == pytest.approx(coverage)


@pytest.mark.parametrize("n", [4, 7, 10])
def test_coverage_is_the_share_of_sign_patterns_with_j_values_on_each_side_of_the_median(n):
    for j in range(1, (n + 1) // 2 + 1):
        patterns = list(itertools.product((0, 1), repeat=n))  # 1: below the true median, each with probability 1/2
        covered = sum(sum(p) >= j and n - sum(p) >= j for p in patterns) / len(patterns)
        assert order_coverage(n, j) == pytest.approx(covered)


def test_paired_ratios_pair_repeat_k_with_repeat_k():
    assert paired_ratios([12.0, 9.0], [10.0, 10.0]) == [1.2, 0.9]
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        median_interval([])


def test_bounds_are_the_larger_of_the_byte_and_multiply_add_ratios():
    dense, pruned = Cost(200, 90, 10, 8), Cost(100, 60, 10, 8)
    assert decode_bound(dense, pruned) == 2.0  # bytes 2.0, multiply-adds 100 / 70
    assert decode_bound(Cost(100, 90, 10, 8), Cost(100, 40, 10, 8)) == 2.0  # multiply-adds 100 / 50
    assert prefill_macs(dense, 4) == 4 * 90 + 8 * 4 * 5 + 10  # blocks, attention scores, the last token's logits
    assert prefill_bound(Cost(1, 90, 10, 8), Cost(1, 60, 10, 4), 4) == pytest.approx((360 + 160 + 10) / (240 + 80 + 10))


def test_a_fault_is_an_interval_above_its_bound_by_more_than_its_half_width():
    assert is_fault(1.5, 1.7, 1.3)       # 0.2 above, half-width 0.1
    assert not is_fault(1.4, 1.6, 1.35)   # 0.05 above, half-width 0.1
    assert not is_fault(1.2, 1.4, 1.3)    # covers the bound


def test_a_models_cost_counts_the_embedding_once_whether_tied_or_not():
    layers, vocab = 2, 50
    tied, untied = model_cost(tiny_llama(vocab, layers=layers)), model_cost(tiny_llama(vocab, layers=layers, tie=False))
    query, kv = 6 * HEAD_DIM, 2 * HEAD_DIM
    block = layers * (HIDDEN * (2 * query + 2 * kv) + 3 * HIDDEN * INTERMEDIATE)
    assert tied == untied  # untied: the output layer is read whole, the input embedding one row per token
    assert (tied.block_macs, tied.output_macs, tied.query_width) == (block, vocab * HIDDEN, layers * query)
    params = sum(p.numel() for p in tiny_llama(vocab, layers=layers).parameters())
    assert tied.read_bytes == 4 * params  # float32


def test_a_gguf_files_cost_from_its_tensor_list():
    f16 = lambda dims: 2 * math.prod(dims)  # noqa: E731
    tensors = [("token_embd.weight", [8, 100]), ("output_norm.weight", [8]), ("blk.0.attn_norm.weight", [8]),
               ("blk.0.attn_q.weight", [8, 4]), ("blk.0.attn_k.weight", [8, 2]), ("blk.0.ffn_up.weight", [8, 16])]
    tied = tensor_cost([(name, dims, f16(dims)) for name, dims in tensors])
    assert tied == Cost(2 * (800 + 8 + 8 + 32 + 16 + 128), 32 + 16 + 128, 800, 4)
    untied = tensor_cost([(name, dims, f16(dims)) for name, dims in [*tensors, ("output.weight", [8, 100])]])
    assert untied == tied  # the input embedding is read a row at a time
