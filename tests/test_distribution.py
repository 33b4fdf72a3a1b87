import torch
from tiny import tiny_llama
from transformers.models.llama.modeling_llama import LlamaMLP

from structprune.calibration.statistics import MomentAccumulator
from structprune.pruning.scores.distribution import head_output_gram, head_similarity, mlp_closed_form, mlp_output_power


def orthogonal_mlp(hidden=16, intermediate=6, seed=0):
    torch.manual_seed(seed)
    config = tiny_llama(10, hidden=hidden, intermediate=intermediate, heads=2, kv_heads=1).config
    mlp = LlamaMLP(config).double()
    q, _ = torch.linalg.qr(torch.randn(hidden, intermediate, dtype=torch.float64))
    mlp.down_proj.weight.data = q * torch.arange(1, intermediate + 1, dtype=torch.float64)  # orthogonal columns
    return mlp


def test_mlp_score_equals_the_drop_in_squared_output_when_a_unit_is_removed():
    mlp = orthogonal_mlp()
    x = torch.randn(500, 16, dtype=torch.float64)
    acc = MomentAccumulator(full=False)
    hook = mlp.down_proj.register_forward_pre_hook(lambda m, a: acc.add(a[0]))
    with torch.no_grad():
        full = mlp(x).pow(2).sum(1).mean()
    hook.remove()
    scores = mlp_output_power(mlp.down_proj.weight, acc.moments()["second_moment_diag"])
    for unit in range(6):
        pruned = orthogonal_mlp()
        pruned.down_proj.weight.data[:, unit] = 0
        with torch.no_grad():
            drop = full - pruned(x).pow(2).sum(1).mean()
        torch.testing.assert_close(scores[unit], drop)


def test_closed_form_equals_expected_power_of_a_linear_unit():
    torch.manual_seed(0)
    w1 = torch.randn(5, 4, dtype=torch.float64)  # 5 units, input dim 4
    w2 = torch.randn(3, 5, dtype=torch.float64)  # output dim 3
    x = torch.randn(2000, 4, dtype=torch.float64)
    sigma = x.T @ x / x.shape[0]
    expected = ((x @ w1.T) ** 2).mean(0) * w2.pow(2).sum(0)
    torch.testing.assert_close(mlp_closed_form(w2, w1, sigma), expected)


def test_head_gram_and_similarity_from_second_moments():
    torch.manual_seed(0)
    head_dim, heads, hidden = 3, 4, 5
    z = torch.randn(1000, heads * head_dim, dtype=torch.float64)
    z[:, 3:6] = z[:, 0:3]  # head 1 sees the same input as head 0
    o = torch.randn(hidden, heads * head_dim, dtype=torch.float64)
    o[:, 3:6] = 2 * o[:, 0:3]  # ... and writes twice its output: similarity 1
    gram = head_output_gram(o, z.T @ z / z.shape[0], head_dim)
    outputs = torch.stack([z[:, h * 3 : (h + 1) * 3] @ o[:, h * 3 : (h + 1) * 3].T for h in range(heads)])
    expected = torch.einsum("isd,jsd->ij", outputs, outputs) / z.shape[0]
    torch.testing.assert_close(gram, expected)
    sim = head_similarity(gram)
    torch.testing.assert_close(sim[0, 1], torch.tensor(1.0, dtype=torch.float64))
    assert sim[0, 2].abs() < 0.2


def test_head_groups_and_grouped_scores():
    from structprune.pruning.scores.distribution import grouped_head_scores, head_groups

    sim = torch.eye(4, dtype=torch.float64)
    sim[0, 2] = sim[2, 0] = 0.9  # heads 0 and 2 redundant
    sim[1, 3] = sim[3, 1] = 0.1  # below the threshold
    assert head_groups(sim, 0.2) == [[0, 2], [1], [3]]
    power = torch.tensor([4.0, 1.0, 5.0, 2.0], dtype=torch.float64)
    scores = grouped_head_scores(power, sim, 0.2)
    # head 0 is the weaker of the pair: it keeps 1 - 0.81 of its power; the others are unchanged
    torch.testing.assert_close(scores, torch.tensor([4.0 * 0.19, 1.0, 5.0, 2.0], dtype=torch.float64))
    assert torch.argmin(scores[[0, 2]]) == 0
