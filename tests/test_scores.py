import pytest
import torch
from tiny import HEAD_DIM, INTERMEDIATE

from structprune.model.geometry import LayerGeometry
from structprune.pruning.scores import REGISTRY, LayerWeights, score_method, score_model
from structprune.pruning.scores.magnitude import magnitude_scores


def hand_layer(num_heads=2, num_kv_heads=1):
    """hidden 2, head_dim 1, intermediate 2, integer weights so norms are easy by hand."""
    g = LayerGeometry(num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=1, hidden_size=2, intermediate_size=2)
    q = torch.tensor([[1.0, -2.0], [3.0, 0.0]])  # rows: head 0, head 1
    k = torch.tensor([[1.0, 1.0]] * num_kv_heads)
    v = torch.tensor([[2.0, 0.0]] * num_kv_heads)
    o = torch.tensor([[1.0, 0.0], [-1.0, 3.0]])  # columns: head 0, head 1
    gate = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    up = torch.tensor([[2.0, 0.0], [1.0, -1.0]])
    down = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # columns: neuron 0, neuron 1
    return LayerWeights(0, g, q, k, v, o, gate, up, down)


def test_l1_known_answer_gqa():
    s = magnitude_scores(hand_layer(), p=1)
    # head 0: mean(|q row|=3, |o col|=2) = 2.5; head 1: mean(3, 3) = 3 (k/v shared by the group)
    torch.testing.assert_close(s.heads, torch.tensor([2.5, 3.0], dtype=torch.float64))
    # neuron 0: mean(gate 2, up 2, down col 3) = 7/3; neuron 1: mean(2, 2, 1) = 5/3
    torch.testing.assert_close(s.neurons, torch.tensor([7 / 3, 5 / 3], dtype=torch.float64))


def test_l2_known_answer_sums_squares_not_roots():
    s = magnitude_scores(hand_layer(), p=2)
    # head 0: mean(1+4, 1+1) = 3.5; head 1: mean(9, 0+9) = 9
    torch.testing.assert_close(s.heads, torch.tensor([3.5, 9.0], dtype=torch.float64))
    # neuron 0: mean(2, 4, 9) = 5; neuron 1: mean(4, 2, 1) = 7/3
    torch.testing.assert_close(s.neurons, torch.tensor([5.0, 7 / 3], dtype=torch.float64))


def test_l1_multi_head_attention_includes_k_and_v():
    s = magnitude_scores(hand_layer(num_heads=2, num_kv_heads=2), p=1)
    # head 0: mean(q 3, k 2, v 2, o 2) = 2.25; head 1: mean(3, 2, 2, 3) = 2.5
    torch.testing.assert_close(s.heads, torch.tensor([2.25, 2.5], dtype=torch.float64))


def test_head_scores_sum_over_head_dim(model):
    weights = LayerWeights.from_layer(0, model.model.layers[0], head_dim=HEAD_DIM)
    s = magnitude_scores(weights, p=1)
    q_rows = weights.q.abs().sum(1).double()
    o_cols = weights.o.abs().sum(0).double()
    expected_head2 = ((q_rows + o_cols) / 2)[2 * HEAD_DIM : 3 * HEAD_DIM].sum()
    torch.testing.assert_close(s.heads[2], expected_head2)


def test_random_is_seeded_and_differs_by_layer_and_seed(model):
    a = score_model(model, "random", options={"seed": 0})
    b = score_model(model, "random", options={"seed": 0})
    c = score_model(model, "random", options={"seed": 1})
    torch.testing.assert_close(a["layers.0.neurons"], b["layers.0.neurons"])
    assert not torch.equal(a["layers.0.neurons"], a["layers.1.neurons"])
    assert not torch.equal(a["layers.0.neurons"], c["layers.0.neurons"])


def test_score_model_shapes_and_registry(model):
    scores = score_model(model, "l2")
    assert scores["layers.1.heads"].shape == (6,)
    assert scores["layers.1.neurons"].shape == (INTERMEDIATE,)
    assert {"random", "l1", "l2"} <= set(REGISTRY)
    with pytest.raises(ValueError, match="unknown scoring method"):
        score_method("nope")


def test_depth2_magnitude_known_answer():
    from structprune.pruning.scores.magnitude import depth2_magnitude_scores

    s = depth2_magnitude_scores(hand_layer())
    # head 0: ||q row||=sqrt(5), ||o col||=sqrt(2) -> sqrt(10); head 1: sqrt(9)*sqrt(9) = 9
    torch.testing.assert_close(s.heads, torch.tensor([10 ** 0.5, 9.0], dtype=torch.float64))
    # neuron 0: ||(gate, up) row||^2 = 2 + 4, ||down col||^2 = 9 -> sqrt(54); neuron 1: sqrt((4+2)*1)
    torch.testing.assert_close(s.neurons, torch.tensor([54 ** 0.5, 6 ** 0.5], dtype=torch.float64))


@pytest.mark.parametrize("method, options", [
    ("distribution", {}), ("distribution", {"mlp": "output", "redundancy": "none"}), ("distribution", {"mlp": "closed_form"}),
    ("wanda_sp", {}), ("flap", {}), ("l2", {}), ("magnitude2", {}),
])
def test_head_scores_read_attention_statistics_only(model, input_ids, method, options):
    """The paper's recovery scores heads after an attention-only pass, with stand-in MLP
    moments (statistics.with_placeholder_mlp_moments): every moment-reading score's head
    scores must not depend on the MLP sites."""
    from structprune.calibration.statistics import (
        MLP_SITES,
        collect_statistics,
        layer_statistics,
        with_placeholder_mlp_moments,
    )

    stats, _ = collect_statistics(model, input_ids, batch_size=3, progress=False)
    layer = layer_statistics(stats, 1)
    attention_only = {k: v for k, v in layer.items() if not k.startswith(MLP_SITES)}
    assert len(attention_only) < len(layer)
    weights = LayerWeights.from_layer(1, model.model.layers[1], head_dim=HEAD_DIM)
    scorer = score_method(method).make(**options)
    placeholders = with_placeholder_mlp_moments(attention_only, weights.geometry.hidden_size, INTERMEDIATE)
    torch.testing.assert_close(scorer(weights, placeholders).heads, scorer(weights, layer).heads, rtol=0, atol=0)
    # as the recovery calls it: an empty MLP and empty stand-ins, so no neuron score is computed
    empty = with_placeholder_mlp_moments(attention_only, weights.geometry.hidden_size, 0)
    heads_only = scorer(weights.without_neurons(), empty)
    assert heads_only.neurons.numel() == 0
    torch.testing.assert_close(heads_only.heads, scorer(weights, layer).heads, rtol=0, atol=0)
