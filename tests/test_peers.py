"""Peer baselines: Wanda-sp, FLAP, LLM-Pruner (Taylor), with known answers on small tensors."""

import copy
import math

import pytest
import torch
from tiny import HEAD_DIM, INTERMEDIATE

from structprune.calibration.statistics import collect_statistics, layer_statistics
from structprune.io.checkpoint import save_checkpoint
from structprune.model.geometry import LayerGeometry, count_parameters, model_geometries
from structprune.model.loading import load_checkpoint
from structprune.pruning.engine import prune_with_recipe
from structprune.pruning.planning import LayerPlan, PrunePlan, plan_global, plan_layer
from structprune.pruning.scores import LayerWeights, score_method, score_model
from structprune.pruning.scores.flap import fluctuation_metric, standardize
from structprune.pruning.scores.taylor import channel_saliency, taylor_statistics
from structprune.pruning.scores.wanda import wanda_channel_scores
from structprune.pruning.slicing import compensation_bias, prune_model, unit_channels
from structprune.spec.recipe import Recipe

W = torch.tensor([[1.0, -2.0], [3.0, 4.0]])


def test_wanda_channel_score_by_hand():
    # mean_i |W_ij| = [2, 3]; sqrt(E[x^2]) = [2, 3]
    assert wanda_channel_scores(W, torch.tensor([4.0, 9.0])).tolist() == [4.0, 9.0]


def test_flap_metrics_by_hand():
    mean, second = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 4.0])  # variances 1 and 4
    assert fluctuation_metric(W, mean, second, "IFV").tolist() == [1.0, 4.0]
    assert fluctuation_metric(W, mean, second, "WIFV").tolist() == [10.0, 80.0]  # column norms^2 10, 20
    assert fluctuation_metric(W, mean, second, "WIFN").tolist() == pytest.approx([2.0 * math.sqrt(2), 6.0], rel=1e-12)
    z = standardize(torch.tensor([10.0, 80.0], dtype=torch.float64))
    torch.testing.assert_close(z, torch.tensor([-1, 1], dtype=torch.float64) / math.sqrt(2))
    assert standardize(torch.ones(3)).tolist() == [0.0, 0.0, 0.0]


def test_flap_scores_square_attention_channels_and_average_per_head(model, input_ids):
    stats, _ = collect_statistics(model, input_ids, progress=False)
    layer = model.model.layers[0]
    weights = LayerWeights.from_layer(0, layer, HEAD_DIM)
    s = layer_statistics(stats, 0)
    scores = score_method("flap").make()(weights, s)
    m = fluctuation_metric(weights.o, s["o_proj_in.mean"], s["o_proj_in.second_moment"].diagonal(), "WIFV") ** 2
    z = (m - m.mean()) / m.std()
    torch.testing.assert_close(scores.heads, z.reshape(6, HEAD_DIM).mean(1))
    assert abs(float(scores.neurons.mean())) < 1e-9 and abs(float(scores.neurons.std()) - 1) < 1e-9


def test_bias_compensation_on_a_linear_by_hand():
    weight = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    bias = compensation_bias(weight, torch.tensor([7.0, 0.5, -1.0]), torch.tensor([1]))
    assert bias.tolist() == [1 * 7 + 3 * -1, 4 * 7 + 6 * -1]


def _constant_channel_hooks(model, plan, value):
    """Force the removed channels' inputs of o_proj / down_proj to `value` (constant inputs)."""
    handles = []
    for layer, lp in zip(model.model.layers, plan.layers):
        heads = layer.self_attn.q_proj.out_features // HEAD_DIM
        o_removed = unit_channels(sorted(set(range(heads)) - set(lp.keep_heads)), HEAD_DIM)
        d_removed = torch.tensor(sorted(set(range(INTERMEDIATE)) - set(lp.keep_neurons)), dtype=torch.long)

        def hook(removed):
            def set_constant(_m, args):
                x = args[0].clone()
                x[..., removed] = value
                return (x,)
            return set_constant

        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(hook(o_removed)))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(hook(d_removed)))
    return handles


def test_bias_compensation_is_exact_when_pruned_channels_are_constant(model, tokenizer, input_ids, tmp_path):
    plan = PrunePlan([
        LayerPlan([0, 1, 2], [0], list(range(0, INTERMEDIATE, 2))),  # kv group 1 removed, half the neurons
        LayerPlan([0, 1, 2, 3, 4, 5], [0, 1], list(range(INTERMEDIATE - 7))),
    ])
    dense = copy.deepcopy(model)
    for handle in _constant_channel_hooks(dense, plan, 0.75):
        pass
    expected = dense(input_ids).logits
    stats, _ = collect_statistics(dense, input_ids, progress=False)  # removed channels have mean 0.75 exactly
    uncompensated = prune_model(copy.deepcopy(model), plan)(input_ids).logits
    pruned = prune_model(model, plan, stats)
    assert pruned.model.layers[0].self_attn.o_proj.bias is not None
    torch.testing.assert_close(pruned(input_ids).logits, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(uncompensated, expected, atol=1e-3)
    save_checkpoint(pruned, tokenizer, tmp_path / "ckpt", {"stage": "test"})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.model.layers[1].mlp.down_proj.bias is not None
    torch.testing.assert_close(loaded(input_ids).logits, expected, atol=1e-5, rtol=1e-5)


def _geometries(layers=4):
    return [LayerGeometry(num_heads=6, num_kv_heads=2, head_dim=4, hidden_size=8, intermediate_size=40)] * layers


@pytest.mark.parametrize("sparsity", [0.1, 0.2, 0.5])
def test_global_threshold_reaches_the_parameter_ratio(sparsity):
    geometries = _geometries()
    generator = torch.Generator().manual_seed(0)
    scores = {}
    for i, g in enumerate(geometries):
        scores[f"layers.{i}.heads"] = torch.randn(g.num_heads, generator=generator, dtype=torch.float64) + i
        scores[f"layers.{i}.neurons"] = torch.randn(g.intermediate_size, generator=generator, dtype=torch.float64)
    plan = plan_global(scores, geometries, sparsity)
    total = sum(g.block_params for g in geometries)
    kept = sum(
        (2 * len(lp.keep_heads) + 2 * len(lp.keep_kv_heads)) * g.hidden_size * g.head_dim + 3 * g.hidden_size * len(lp.keep_neurons)
        for lp, g in zip(plan.layers, geometries)
    )
    largest_unit = (2 * 3 + 2) * 8 * 4
    assert abs((1 - sparsity) * total - kept) <= largest_unit
    widths = {len(lp.keep_kv_heads) for lp in plan.layers} | {-len(lp.keep_neurons) for lp in plan.layers}
    assert len(widths) > 2  # layers really get different widths


def test_global_threshold_keeps_the_highest_scores_across_layers():
    geometries = _geometries(2)
    scores = {
        "layers.0.heads": torch.tensor([9.0, 9, 9, 9, 9, 9]), "layers.0.neurons": torch.full((40,), 5.0),
        "layers.1.heads": torch.tensor([9.0, 9, 9, -9, -9, -9]), "layers.1.neurons": torch.linspace(-1, 1, 40),
    }
    plan = plan_global(scores, geometries, 0.3)
    assert plan.layers[0].keep_kv_heads == [0, 1] and len(plan.layers[0].keep_neurons) == 40
    assert plan.layers[1].keep_kv_heads == [0]  # the -9 group goes first
    assert plan.layers[1].keep_neurons == list(range(40 - len(plan.layers[1].keep_neurons), 40))
    with pytest.raises(ValueError, match="kv_groups"):
        plan_global(scores, geometries, 0.3, "within_kv_groups")


def test_taylor_saliency_by_hand():
    grad = torch.tensor([[1.0, 1.0], [0.5, 0.5]])
    rows = channel_saliency(W, grad, torch.ones(2, 2), channel_dim=0)
    assert rows["element1"].tolist() == [3.0, 3.5]  # W*g = [[1, -2], [1.5, 2]]
    assert rows["vector"].tolist() == [1.0, 3.5]  # |1 - 2|, |1.5 + 2|
    assert rows["element2"].tolist() == [4.5, 9.0]  # W*g - W^2/2 = [[.5, -4], [-3, -6]]
    cols = channel_saliency(W, grad, torch.zeros(2, 2), channel_dim=1)
    assert cols["element1"].tolist() == [2.5, 4.0]


def test_taylor_vector_score_is_the_first_order_loss_change(model, input_ids):
    """|sum_j W_cj g_cj| is |dL/dt| for scaling down_proj's column c by (1 - t): check by finite differences."""
    model = model.double()  # finite differences need float64
    stats = taylor_statistics(model, input_ids, progress=False)
    down = model.model.layers[0].mlp.down_proj.weight
    eps = 1e-2  # central difference; RMSNorm computes in float32, so eps cannot be tiny

    def loss_with_column_scaled(c, factor):
        saved = down.data[:, c].clone()
        down.data[:, c] *= factor
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[:, :-1]  # HF's loss upcasts to float32 only
            loss = float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1)))
        down.data[:, c] = saved
        return loss

    for c in (0, 5, 17):
        estimate = abs(loss_with_column_scaled(c, 1 - eps) - loss_with_column_scaled(c, 1 + eps)) / (2 * eps)
        assert estimate == pytest.approx(float(stats["layers.0.taylor.vector.down"][c]), rel=1e-2)


def test_taylor_head_scores_sum_the_group_and_share_kv(model, input_ids):
    stats = taylor_statistics(model, input_ids[:2], progress=False)
    scores = score_model(model, "taylor", stats, {"variant": "element1"})
    s = {n: stats[f"layers.1.taylor.element1.{n}"] for n in ("q", "k", "v", "o")}
    group0 = s["q"][: 3 * HEAD_DIM].sum() + s["o"][: 3 * HEAD_DIM].sum() + s["k"][:HEAD_DIM].sum() + s["v"][:HEAD_DIM].sum()
    torch.testing.assert_close(scores["layers.1.heads"][:3].sum(), group0)


def test_sequential_flow_first_layer_matches_dense_statistics_and_sparsity_zero_is_identity(model, input_ids):
    recipe = Recipe("wanda_sp", flow="sequential")
    before = model(input_ids).logits
    same = prune_with_recipe(copy.deepcopy(model), recipe, 0.0, samples=input_ids, progress=False).model
    torch.testing.assert_close(same(input_ids).logits, before)
    dense_scores = score_model(model, "wanda_sp", collect_statistics(model, input_ids, progress=False)[0])
    expected0 = plan_layer(dense_scores["layers.0.heads"], dense_scores["layers.0.neurons"], model_geometries(model)[0], 0.3, "within_kv_groups")
    result = prune_with_recipe(model, recipe, 0.3, samples=input_ids, progress=False)
    pruned, plan = result.model, result.plan
    assert plan.layers[0] == expected0  # layer 0 sees the same inputs in both flows
    assert count_parameters(pruned)["decoder_blocks"] < count_parameters(same)["decoder_blocks"]


def test_a_score_given_the_wrong_kind_of_statistics_names_the_stage(model, input_ids):
    moments, _ = collect_statistics(model, input_ids, progress=False)
    with pytest.raises(ValueError, match="the `gradients` stage"):
        score_model(model, "taylor", moments)
    with pytest.raises(ValueError, match="the `calibrate` stage"):
        score_model(model, "flap", taylor_statistics(model, input_ids[:1], progress=False))
