import pytest
import torch
from tiny import HEAD_DIM, HIDDEN, INTERMEDIATE
from transformers import AutoModelForCausalLM

from structprune.io.checkpoint import save_checkpoint
from structprune.model.geometry import count_parameters, model_geometries
from structprune.pruning.planning import LayerPlan, PrunePlan, plan_heads, plan_uniform
from structprune.pruning.scores import score_model
from structprune.pruning.slicing import prune_model


def masked_copy(model, plan, head_dim):
    """The dense model with removed units silenced: their o_proj / down_proj columns zeroed."""
    import copy

    masked = copy.deepcopy(model)
    for layer, lp in zip(masked.model.layers, plan.layers):
        heads = layer.self_attn.q_proj.out_features // head_dim
        for h in set(range(heads)) - set(lp.keep_heads):
            layer.self_attn.o_proj.weight.data[:, h * head_dim : (h + 1) * head_dim] = 0
        for n in set(range(layer.mlp.gate_proj.out_features)) - set(lp.keep_neurons):
            layer.mlp.down_proj.weight.data[:, n] = 0
    return masked


def test_sparsity_zero_keeps_everything_and_logits(model, input_ids):
    before = model(input_ids).logits
    plan = plan_uniform(score_model(model, "l2"), model_geometries(model), 0.0)
    assert all(len(lp.keep_neurons) == INTERMEDIATE and len(lp.keep_heads) == 6 for lp in plan.layers)
    prune_model(model, plan)
    torch.testing.assert_close(model(input_ids).logits, before)


@pytest.mark.parametrize("mode", ["within_kv_groups", "kv_groups"])
@pytest.mark.parametrize("method", ["l1", "random"])
def test_pruned_logits_equal_masked_dense(model, input_ids, mode, method):
    plan = plan_uniform(score_model(model, method), model_geometries(model), 0.4, mode)
    expected = masked_copy(model, plan, head_dim=HEAD_DIM)(input_ids).logits
    prune_model(model, plan)
    torch.testing.assert_close(model(input_ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_within_kv_groups_removes_lowest_head_of_each_group():
    from structprune.model.geometry import LayerGeometry

    g = LayerGeometry(num_heads=6, num_kv_heads=2, head_dim=4, hidden_size=8, intermediate_size=8)
    scores = torch.tensor([5.0, 1.0, 3.0, 0.5, 9.0, 2.0])
    heads, kv = plan_heads(scores, g, ratio=0.34, mode="within_kv_groups")  # round(0.34*3) = 1 per group
    assert heads == [0, 2, 4, 5] and kv == [0, 1]
    heads, kv = plan_heads(scores, g, ratio=0.5, mode="kv_groups")  # group sums 9 vs 11.5
    assert heads == [3, 4, 5] and kv == [1]


def test_achieved_block_sparsity_matches_target(model):
    dense = count_parameters(model)["decoder_blocks"]
    geometries = model_geometries(model)
    plan = plan_uniform(score_model(model, "l1"), geometries, 0.25)
    prune_model(model, plan)
    achieved = 1 - count_parameters(model)["decoder_blocks"] / dense
    per_neuron = 3 * HIDDEN / geometries[0].block_params  # one neuron's share of a layer
    assert abs(achieved - 0.25) <= per_neuron / 2 + 1e-9


def test_plan_rejects_bad_sparsity_and_uneven_heads(model):
    with pytest.raises(ValueError, match="sparsity"):
        plan_uniform(score_model(model, "l1"), model_geometries(model), 1.2)
    uneven = PrunePlan([LayerPlan([0, 1, 2, 3], [0, 1], list(range(INTERMEDIATE)))] * 2)  # 3 + 1 heads per group
    with pytest.raises(ValueError, match="evenly"):
        prune_model(model, uneven)


def test_plan_json_roundtrip(model):
    plan = plan_uniform(score_model(model, "l1"), model_geometries(model), 0.3)
    assert PrunePlan.from_json(plan.to_json()) == plan


def test_pruned_checkpoint_loads_with_stock_classes_and_generates(model, tokenizer, input_ids, tmp_path):
    plan = plan_uniform(score_model(model, "l2"), model_geometries(model), 0.3)
    prune_model(model, plan)
    expected = model(input_ids).logits
    save_checkpoint(model, tokenizer, tmp_path / "ckpt", {"stage": "test"})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert loaded.model.layers[0].mlp.gate_proj.out_features == len(plan.layers[0].keep_neurons)
    assert loaded.model.layers[0].self_attn.q_proj.out_features == HEAD_DIM * len(plan.layers[0].keep_heads)
    torch.testing.assert_close(loaded(input_ids).logits, expected)
    out = loaded.generate(input_ids[:1, :4], max_new_tokens=5, do_sample=False, pad_token_id=2)
    assert out.shape == (1, 9)
    assert (tmp_path / "ckpt" / "manifest.json").is_file()
    assert not list(tmp_path.glob(".ckpt.tmp-*"))


def test_scores_of_another_model_are_rejected(model):
    scores = score_model(model, "l1")
    scores["layers.1.neurons"] = scores["layers.1.neurons"][:10]
    with pytest.raises(ValueError, match="scores do not match the model: layer 1"):
        plan_uniform(scores, model_geometries(model), 0.2)
