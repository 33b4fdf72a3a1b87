"""SlimGPT's structured OBS (pruning/obs.py) on small tensors with known answers."""

import pytest
import torch

from structprune.pruning.obs import (
    column_errors,
    compensated,
    dynamic_group_sizes,
    greedy_columns,
    greedy_groups,
    hessian,
)


def inputs(n=200, d=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64)


def test_an_input_that_is_a_combination_of_kept_inputs_is_removed_without_changing_the_output():
    """Planted map: x_5 = 2 x_0 - x_3, so removing column 5 and compensating keeps W x exactly."""
    x = inputs()
    x[:, 5] = 2 * x[:, 0] - x[:, 3]
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    keep = torch.tensor([0, 1, 2, 3, 4])
    new = compensated(w, hessian(x.T @ x, len(x), percdamp=0.0), keep)
    torch.testing.assert_close(x[:, keep] @ new.T, x @ w.T, atol=1e-9, rtol=1e-9)
    assert torch.allclose(new[:, 0], w[:, 0] + 2 * w[:, 5]) and torch.allclose(new[:, 3], w[:, 3] - w[:, 5])


def sequential_obs(w, h, order, count):
    """The reference's update, written out: permute, upper Cholesky of H^-1, remove the first
    `count` columns one at a time with the local and global updates (float64)."""
    w, hinv = w[:, order].clone(), torch.cholesky_inverse(torch.linalg.cholesky(h))[order][:, order]
    u = torch.linalg.cholesky(hinv, upper=True)[:count]
    w1, errors = w[:, :count].clone(), torch.zeros(w.shape[0], count, dtype=w.dtype)
    for i in range(count):
        errors[:, i] = w1[:, i] / u[i, i]
        w1[:, i:] -= errors[:, i:i + 1] @ u[i:i + 1, i:count]
    w[:, count:] -= errors @ u[:, count:]
    w[:, :count] = 0
    return w[:, torch.argsort(order)]


def test_compensation_in_closed_form_equals_the_references_sequential_update_and_composes():
    x, w = inputs(d=8), torch.randn(5, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    h = hessian(x.T @ x, len(x), percdamp=0.01)
    order = torch.tensor([6, 2, 0, 1, 3, 4, 5, 7])  # remove 6 and 2
    reference = sequential_obs(w, h, order, 2)
    keep = torch.tensor([0, 1, 3, 4, 5, 7])
    torch.testing.assert_close(compensated(w, h, keep), reference[:, keep], atol=1e-10, rtol=1e-10)
    # removing 6, then 2 from the compensated weight, equals removing both at once (nested projections)
    first = torch.zeros_like(w)
    first[:, [0, 1, 2, 3, 4, 5, 7]] = compensated(w, h, torch.tensor([0, 1, 2, 3, 4, 5, 7]))
    torch.testing.assert_close(compensated(first, h, keep), compensated(w, h, keep), atol=1e-10, rtol=1e-10)


def test_errors_are_zero_for_dead_columns_and_the_grouped_form_matches_the_diagonal_for_width_one():
    x, w = inputs(d=6), torch.randn(3, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w[:, 2] = 0
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(hessian(x.T @ x, len(x))))
    errors = column_errors(w, hinv)
    assert errors[2] == 0 and bool((errors[[0, 1, 3, 4, 5]] > 0).all())
    torch.testing.assert_close((w.pow(2) / hinv.diagonal()).sum(0), errors)
    grouped = column_errors(w, hinv, width=2)  # column 0 of each block as the diagonal, column 1 Schur-reduced
    block = hinv[:2, :2]
    assert grouped[0] == pytest.approx(float((w[:, 0] ** 2).sum() / block[0, 0]))
    assert grouped[1] == pytest.approx(float((w[:, 1] ** 2).sum() / (block[1, 1] - block[0, 1] ** 2 / block[0, 0])))


def test_the_head_loop_takes_dead_and_redundant_heads_and_honours_each_groups_quota():
    """Four 2-column heads in two kv groups: head 1 is dead, head 2 duplicates head 3's input.
    With one head per group to go, the loop removes head 1 (error 0) and one of heads 2 / 3
    (error near 0: the other carries its signal); a quota of 0 protects a group."""
    x = inputs(d=8, seed=4)
    x[:, 4:6] = x[:, 6:8]  # head 2's inputs equal head 3's
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w[:, 2:4] = 0  # head 1 dead
    h = hessian(x.T @ x, len(x), percdamp=1e-6)
    heads = [[0, 1], [2, 3], [4, 5], [6, 7]]
    removed = greedy_groups(w, h, heads, {0: 1, 1: 1}, [0, 0, 1, 1], 2)
    assert removed[0] == 1 or removed[1] == 1
    assert set(removed) in ({1, 2}, {1, 3})
    assert greedy_groups(w, h, heads, {0: 0, 1: 1}, [0, 0, 1, 1], 2) in ([2], [3])


def test_dynamic_group_sizes_follow_the_reference():
    assert dynamic_group_sizes(0) == []
    assert dynamic_group_sizes(384) == [64] * 6  # (384 - 512) // 2 < 64
    sizes = dynamic_group_sizes(2752)  # LLaMA-7B's 11008 channels at 25 %
    assert sizes[:3] == [1024, 304, 64] and sum(sizes) == 2752 and sizes[-1] == 2752 - 1024 - 304 - 64 * 22


def test_the_column_loop_removes_the_planted_useless_columns():
    x = inputs(n=300, d=10, seed=6)
    w = torch.randn(4, 10, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    w[:, [1, 7]] *= 1e-4  # nearly unused columns
    assert sorted(greedy_columns(w, hessian(x.T @ x, len(x)), 2)) == [1, 7]
