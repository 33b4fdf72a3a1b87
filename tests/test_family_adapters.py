"""Known answers for every supported model family (issue #28), on tiny random models with
randomised norms, biases and q/k norms: (a) a pruned checkpoint, uniform or with per-layer
widths, in query heads or whole kv groups, equals the source model in its own class with the
removed units' o_proj / down_proj columns zeroed; (b) a model whose removed units are dead
comes back unchanged through every reconstruction; (c) the attention statistics equal the
attention the model itself computes (after q/k norms, inside sliding windows)."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import replace

import pytest
import torch
import transformers
from test_plan_prune import masked_copy

from structprune.calibration.statistics import attention_probabilities
from structprune.calibration.streams import capture_layer_inputs
from structprune.io.checkpoint import save_checkpoint
from structprune.model.families import family_problem
from structprune.model.geometry import model_geometries
from structprune.model.loading import load_checkpoint
from structprune.pruning.engine import prune_with_recipe
from structprune.pruning.planning import plan_uniform
from structprune.pruning.scores import score_model
from structprune.pruning.slicing import prune_model
from structprune.pruning.units import LayerPlan, PrunePlan
from structprune.spec.recipe import Recipe

HEAD_DIM = 4
SMALL = dict(vocab_size=160, hidden_size=48, intermediate_size=24, num_hidden_layers=2, num_attention_heads=6,
             num_key_value_heads=2, head_dim=HEAD_DIM, max_position_embeddings=64, tie_word_embeddings=False)
FAMILIES = {  # model_type: (config class, what it adds to the Llama block, its class name)
    "llama": (transformers.LlamaConfig, {}, "LlamaForCausalLM"),
    "mistral": (transformers.MistralConfig, {"sliding_window": 5}, "MistralForCausalLM"),
    "qwen2": (transformers.Qwen2Config, {}, "Qwen2ForCausalLM"),
    "qwen2-window": (transformers.Qwen2Config, {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1},
                     "Qwen2ForCausalLM"),  # layer 0 full attention, layer 1 a sliding window: a mask per layer
    "qwen3": (transformers.Qwen3Config, {}, "Qwen3ForCausalLM"),
    "gemma": (transformers.GemmaConfig, {}, "GemmaForCausalLM"),
    "gemma2": (transformers.Gemma2Config, {"sliding_window": 5, "attn_logit_softcapping": 2.0,
                                           "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 8},
               "Gemma2ForCausalLM"),  # soft-capping small enough to bite on these logits
    "gemma3_text": (transformers.Gemma3TextConfig, {"sliding_window": 5, "sliding_window_pattern": 2,
                                                     "query_pre_attn_scalar": 8}, "Gemma3ForCausalLM"),
    "granite": (transformers.GraniteConfig, {"embedding_multiplier": 3.0, "residual_multiplier": 0.5,
                                             "attention_multiplier": 0.3, "logits_scaling": 4.0},
                "GraniteForCausalLM"),  # multipliers far from 1, so a dropped one shows
    "smollm3": (transformers.SmolLM3Config, {"no_rope_layer_interval": 2, "pad_token_id": 0},
                "SmolLM3ForCausalLM"),  # layer 1: NoPE
}
SANDWICH = {"gemma2", "gemma3_text"}  # post-norms: a refit toward the residual stream is refused (model/blocks.py)


def family_model(model_type: str, seed: int = 0, layers: int = SMALL["num_hidden_layers"]):
    """A random model of the family with every norm, bias and q/k norm randomised (a dropped
    one shows in the logits)."""
    config_class, extra, _ = FAMILIES[model_type]
    torch.manual_seed(seed)
    config = config_class(**{**SMALL, "num_hidden_layers": layers}, **extra)
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                parameter.normal_(0, 0.3)
            else:
                parameter.normal_(0, 0.3)
    return model


@pytest.fixture
def ids():
    torch.manual_seed(1)
    return torch.randint(3, 160, (3, 12))  # longer than Mistral's window of 5


def per_layer_plan():
    """Different widths per layer: query heads within groups in layer 0, a whole kv group in layer 1."""
    return PrunePlan([LayerPlan([0, 2, 3, 5], [0, 1], [i for i in range(24) if i % 3]),
                      LayerPlan([3, 4, 5], [1], list(range(0, 24, 2)))])


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_the_family_is_supported(model_type):
    assert family_problem(FAMILIES[model_type][0](**SMALL, **FAMILIES[model_type][1]).to_dict(), "m") is None


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@pytest.mark.parametrize("mode", ["within_kv_groups", "kv_groups"])
def test_a_uniform_pruned_checkpoint_is_the_source_with_removed_units_zeroed_in_its_own_class(model_type, mode, ids, tmp_path, tokenizer):
    model = family_model(model_type)
    plan = plan_uniform(score_model(model, "l2"), model_geometries(model), 0.34, mode)
    expected = masked_copy(model, plan, HEAD_DIM)(ids).logits
    pruned = prune_model(model, plan)
    assert type(pruned).__name__ == FAMILIES[model_type][2]
    torch.testing.assert_close(pruned(ids).logits, expected, atol=1e-5, rtol=1e-4)
    save_checkpoint(pruned, tokenizer, tmp_path / "ckpt", {"stage": "test"})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded).__name__ == FAMILIES[model_type][2]
    torch.testing.assert_close(loaded(ids).logits, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_per_layer_widths_keep_the_family_and_load_with_plain_transformers(model_type, ids, tmp_path, tokenizer):
    model = family_model(model_type)
    plan = per_layer_plan()
    expected = masked_copy(model, plan, HEAD_DIM)(ids).logits
    pruned = prune_model(model, plan)
    assert isinstance(pruned, type(family_model(model_type)))  # a subclass of the family's own class
    # float32 sums over other widths, in another order (transformers 5.25: 2.4e-5 on one SmolLM3 logit of 5,760);
    # one neuron swapped per layer moves them by about 6
    torch.testing.assert_close(pruned(ids).logits, expected, atol=5e-5, rtol=1e-4)
    save_checkpoint(pruned, tokenizer, tmp_path / "ckpt", {"stage": "test"})
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", trust_remote_code=True)
    torch.testing.assert_close(plain(ids).logits, expected, atol=5e-5, rtol=1e-4)
    generated = plain.generate(ids[:1, :4], max_new_tokens=6, do_sample=False)  # the kv cache of unequal layers
    assert generated.shape == (1, 10)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_flaps_bias_compensation_equals_the_zeroed_source_plus_its_bias(model_type, ids):
    model = family_model(model_type)
    plan = per_layer_plan()
    means = {f"layers.{i}.{site}.mean": torch.randn(width) for i in range(2)
             for site, width in (("o_proj_in", 6 * HEAD_DIM), ("down_proj_in", 24))}
    masked = masked_copy(model, plan, HEAD_DIM)
    for i, (layer, dense_layer, lp) in enumerate(zip(masked.model.layers, model.model.layers, plan.layers)):
        for parent, dense_parent, name, site, kept in (
                (layer.self_attn, dense_layer.self_attn, "o_proj", "o_proj_in", [c for h in lp.keep_heads for c in range(h * HEAD_DIM, (h + 1) * HEAD_DIM)]),
                (layer.mlp, dense_layer.mlp, "down_proj", "down_proj_in", lp.keep_neurons)):
            removed = torch.ones(getattr(dense_parent, name).in_features, dtype=torch.bool)
            removed[kept] = False
            bias = getattr(dense_parent, name).weight.data[:, removed] @ means[f"layers.{i}.{site}.mean"][removed]
            linear = getattr(parent, name)
            new = torch.nn.Linear(linear.in_features, linear.out_features, bias=True)
            new.weight.data.copy_(linear.weight.data)
            new.bias.data.copy_(bias + (linear.bias.data if linear.bias is not None else 0))
            setattr(parent, name, new)
    pruned = prune_model(model, plan, input_means=means)  # its bias in float64, ours in float32
    torch.testing.assert_close(pruned(ids).logits, masked(ids).logits, atol=5e-5, rtol=1e-4)


def with_dead_units(model):
    """Half the query heads of every kv group and half the MLP neurons contribute nothing."""
    with torch.no_grad():
        for layer in model.model.layers:
            for head in (1, 2, 4, 5):  # groups {0, 1, 2} and {3, 4, 5}
                channels = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
                layer.self_attn.o_proj.weight[:, channels] = 0
                layer.self_attn.q_proj.weight[channels] = 0
                if layer.self_attn.q_proj.bias is not None:
                    layer.self_attn.q_proj.bias[channels] = 0
            for neuron in range(0, 24, 2):
                layer.mlp.down_proj.weight[:, neuron] = 0
                layer.mlp.gate_proj.weight[neuron] = 0
                layer.mlp.up_proj.weight[neuron] = 0
    return model


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@pytest.mark.parametrize("reconstruct,target", [("none", "block"), ("bias", "block"), ("refit", "block"),
                                                ("refit", "module"), ("paper", "block"), ("obs", "block")])
def test_dead_units_pruned_with_every_reconstruction_return_the_dense_logits(model_type, reconstruct, target, ids):
    model = with_dead_units(family_model(model_type))
    if model_type in SANDWICH and (reconstruct, target) == ("refit", "block"):
        with pytest.raises(ValueError, match="post-attention and post-MLP norms divide"):
            prune_with_recipe(model, Recipe("l2", flow="sequential", reconstruct=reconstruct), 0.3, samples=ids)
        return
    dense = model(ids).logits
    flow = "dense" if reconstruct == "none" else "sequential"  # bias: FLAP's in the sequential flow
    recipe = Recipe("l2", flow=flow, reconstruct=reconstruct, target=target, layers=[0, 2], damp=1.0)
    scores = score_model(model, "l2") if flow == "dense" else None
    result = prune_with_recipe(copy.deepcopy(model), recipe, 0.3, scores=scores, samples=ids, batch_size=3, progress=False)
    assert all(len(lp.keep_heads) < 6 for lp in result.plan.layers)  # units were removed
    torch.testing.assert_close(result.model(ids).logits, dense, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@pytest.mark.parametrize("heads", ["within_kv_groups", "kv_groups"])
def test_slimgpt_removes_dead_units_first_and_returns_the_dense_logits(model_type, heads, ids):
    """SlimGPT's greedy OBS loop (score obs, reconstruct obs): a dead head's or neuron's OBS
    error is 0, so the loop takes dead units first and the compensation leaves the rest alone."""
    model = with_dead_units(family_model(model_type))
    with torch.no_grad():  # whole dead kv group for the kv_groups unit: group {3, 4, 5}
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:, 3 * HEAD_DIM:] = 0
    dense = model(ids).logits
    recipe = Recipe("obs", flow="sequential", reconstruct="obs", heads=heads, layers=[0, 2])
    result = prune_with_recipe(copy.deepcopy(model), recipe, 0.3, samples=ids, batch_size=3, progress=False)
    for lp in result.plan.layers:  # dead heads: 1, 2 (with_dead_units) and 3, 4, 5 (o_proj zeroed above); ties among them are free
        assert len(lp.keep_heads) < 6 and {1, 2, 3, 4, 5} >= set(range(6)) - set(lp.keep_heads)
        assert all(n % 2 == 0 for n in set(range(24)) - set(lp.keep_neurons))  # only dead (even) neurons went
    torch.testing.assert_close(result.model(ids).logits, dense, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@pytest.mark.parametrize("reconstruct,target", [("refit", "module"), ("refit", "block"), ("paper", "block")])
def test_refits_on_live_units_and_a_cached_dense_stream_give_the_live_weights(model_type, reconstruct, target, ids):
    """Live units this time: every refit's error is below the target's energy (the report), and
    a cached dense stream (the residual stream rebuilt from the projection outputs through the
    block's own post-norms or multipliers) gives the live result bitwise."""
    from structprune.calibration.densestream import record_dense_stream

    if model_type in SANDWICH and (reconstruct, target) == ("refit", "block"):
        return  # refused (above)
    model = family_model(model_type)
    recipe = Recipe("l2", flow="sequential", reconstruct=reconstruct, target=target, layers=[0, 2], damp=0.5)
    live = prune_with_recipe(copy.deepcopy(model), recipe, 0.3, samples=ids, batch_size=3, progress=False)
    sliced = prune_with_recipe(copy.deepcopy(model), replace(recipe, reconstruct="none"), 0.3, samples=ids,
                               batch_size=3, progress=False)
    assert all(r["o_proj"]["relative"] < 1 and r["down_proj"]["relative"] < 1 for r in live.reports)
    refit_o = live.model.model.layers[1].self_attn.o_proj.weight
    assert refit_o.shape == sliced.model.model.layers[1].self_attn.o_proj.weight.shape
    with tempfile.TemporaryDirectory() as folder:
        record_dense_stream(model, ids, 3, folder, {"inputs": {}}, progress=False)
        cached = prune_with_recipe(copy.deepcopy(model), recipe, 0.3, samples=ids, batch_size=3, progress=False,
                                   dense_stream=folder)
    for a, b in zip(live.model.state_dict().values(), cached.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_attention_statistics_are_the_attention_the_model_computes(model_type, ids):
    model = family_model(model_type)
    out = model(ids, output_attentions=True)
    batches = capture_layer_inputs(model, ids, batch_size=3)
    hidden = batches[0].hidden
    for index, layer in enumerate(model.model.layers):
        kwargs = batches[0].kwargs_for(layer)
        probs = attention_probabilities(layer.self_attn, layer.input_layernorm(hidden), kwargs["position_embeddings"])
        torch.testing.assert_close(probs, out.attentions[index].float(), atol=1e-5, rtol=1e-4)
        hidden = layer(hidden, **kwargs)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_the_layer_at_a_time_stream_computes_the_models_own_logits(model_type, ids):
    """Each layer gets what the model gives it (a sliding-window layer its own mask), so running
    the layers one at a time on the captured inputs ends in the model's logits."""
    from structprune.calibration.streams import head_logits, propagate

    model = family_model(model_type)
    batches = capture_layer_inputs(model, ids, batch_size=2)
    for layer in model.model.layers:
        propagate(layer, batches)
    logits = head_logits(model, torch.cat([b.hidden for b in batches]))  # Gemma 2's soft-cap, Granite's divisor
    torch.testing.assert_close(logits, model(ids).logits, atol=1e-5, rtol=1e-4)


def test_exports_llama_cpp_would_run_otherwise_are_named():
    from structprune.model.families import export_problem

    window = transformers.MistralConfig(**SMALL, sliding_window=5).to_dict()
    assert "has no sliding window" in export_problem(window, "m")
    assert export_problem(transformers.MistralConfig(**SMALL, sliding_window=None).to_dict(), "m") is None
    assert "heads removed does not load" in export_problem(transformers.Qwen2Config(**SMALL).to_dict(), "m")
    for config_class, arch in ((transformers.Qwen3Config, "qwen3"), (transformers.Gemma3TextConfig, "gemma3"),
                               (transformers.GraniteConfig, "granite"), (transformers.SmolLM3Config, "smollm3")):
        problem = export_problem(config_class(**SMALL, pad_token_id=0).to_dict(), "m")
        assert f"{arch} architecture" in problem and "layer 0's head count and MLP width" in problem, problem
    assert export_problem(transformers.LlamaConfig(**SMALL).to_dict(), "m") is None
    scaled = transformers.LlamaConfig(**SMALL, rope_parameters={"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0,
                                                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                               "original_max_position_embeddings": 16})
    assert export_problem(scaled.to_dict(), "m") is None  # Llama-3.x: written as rope_freqs


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_the_block_target_brings_the_pruned_stream_to_the_dense_one(model_type):
    """The defining property of the residual-stream target: the pruned residual plus the update
    of the target output equals the dense residual plus the dense update (Granite's multiplier
    included); a sandwich block has no such target and says so."""
    from structprune.model.blocks import attention_update, block_target, mlp_update

    layer = family_model(model_type).model.layers[1]
    g = torch.Generator().manual_seed(0)
    dense_out, dense_res, pruned_res = (torch.randn(2, 5, SMALL["hidden_size"], generator=g) for _ in range(3))
    if model_type in SANDWICH:
        with pytest.raises(ValueError, match="no linear residual-stream target"):
            block_target(layer, dense_out, dense_res, pruned_res)
        return
    with torch.no_grad():
        target = block_target(layer, dense_out, dense_res, pruned_res)
        for update in (attention_update, mlp_update):
            torch.testing.assert_close(pruned_res + update(layer, target), dense_res + update(layer, dense_out))
