"""The engine and its strategies: known answers on small tensors and tiny models."""

import copy

import pytest
import torch

from structprune.calibration.statistics import collect_statistics
from structprune.model.geometry import LayerGeometry, model_geometries
from structprune.pruning.allocation import (
    default_layer_range,
    global_budgets,
    layer_ratio,
    round_kept_neurons,
    uniform_budgets,
)
from structprune.pruning.engine import prune_with_recipe
from structprune.pruning.planning import plan_global, plan_uniform
from structprune.pruning.reconstruction import LinearRefit, refit_shared_input, ridge_toward
from structprune.pruning.scores import REGISTRY, score_model
from structprune.pruning.slicing import prune_model
from structprune.pruning.units import LayerBudget, select_units
from structprune.spec.catalog import SCORE_STATISTICS
from structprune.spec.recipe import Recipe, recipe_problems

GQA = LayerGeometry(num_heads=6, num_kv_heads=2, head_dim=4, hidden_size=48, intermediate_size=64)


# ------------------------------------------------------------------ reconstruction numerics

def test_ridge_toward_known_answers():
    torch.manual_seed(0)
    x = torch.randn(200, 4, dtype=torch.float64)
    w_true = torch.randn(3, 4, dtype=torch.float64)
    refit = LinearRefit(product_dtype=torch.float64)  # exact products: known answers to float64 accuracy
    refit.add(x, x @ w_true.T)
    w0 = torch.zeros(3, 4, dtype=torch.float64)
    torch.testing.assert_close(ridge_toward(w0, refit, damp=0.0), w_true)  # exact least squares
    # the error comes from the normal equations (energy - 2 tr(W C) + tr(W G W^T)): zero up to
    # float64 cancellation of terms about as large as the target's energy per row
    assert refit.error(w_true) < 1e-12 * float(refit.yy.sum()) / refit.count
    assert ridge_toward(w0, refit, damp=1e9).abs().max() < 1e-6  # strong damping stays at W0


@pytest.mark.parametrize("d", [3, 511, 512, 577, 1536])
def test_gram_from_upper_strips_is_the_full_product(d):
    from structprune.pruning.reconstruction import gram

    x = torch.randn(64, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    torch.testing.assert_close(gram(x), x.T @ x, rtol=1e-12, atol=1e-10)


def test_float32_batch_products_match_float64_ones_to_float32_accuracy():
    """The default product precision (float32 per batch, float64 sums) against exact products,
    with a massive activation channel as in real models."""
    torch.manual_seed(0)
    x = torch.randn(4, 256, 12)
    x[..., 3] *= 300.0
    y = x @ torch.randn(5, 12).T
    fast, exact = LinearRefit(), LinearRefit(product_dtype=torch.float64)
    for batch_x, batch_y in zip(x, y):
        fast.add(batch_x, batch_y)
        exact.add(batch_x, batch_y)
    for a, b in ((fast.xx, exact.xx), (fast.yx, exact.yx), (fast.yy, exact.yy)):
        assert a.dtype == torch.float64
        assert float((a - b).norm() / b.norm()) < 1e-6
    w0 = torch.zeros(5, 12)
    rel = (ridge_toward(w0, fast, 0.01) - ridge_toward(w0, exact, 0.01)).norm() / ridge_toward(w0, exact, 0.01).norm()
    assert float(rel) < 1e-5


def test_shared_input_refit_recovers_planted_maps_and_keeps_weights_when_inputs_agree():
    torch.manual_seed(0)
    x = torch.randn(300, 5, dtype=torch.float64)
    planted = [torch.randn(3, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)]
    linears = [torch.nn.Linear(5, 3, bias=False).double(), torch.nn.Linear(5, 2, bias=False).double()]
    refit = LinearRefit(product_dtype=torch.float64)
    refit.add(x, torch.cat([x @ w.T for w in planted], -1))
    reports = refit_shared_input(linears, refit, damp=0.0)
    for linear, w, report in zip(linears, planted, reports):
        torch.testing.assert_close(linear.weight.data, w)
        assert report["relative"] < 1e-12  # rounding of the normal equations only
    # X^ = X and Y = W0 X: the damped refit returns W0 exactly
    w0 = torch.randn(3, 5, dtype=torch.float64)
    same = torch.nn.Linear(5, 3, bias=False).double()
    same.weight.data = w0.clone()
    refit = LinearRefit(product_dtype=torch.float64)
    refit.add(x, x @ w0.T)
    refit_shared_input([same], refit, damp=0.01)
    torch.testing.assert_close(same.weight.data, w0)


def test_reported_error_after_a_damped_refit_equals_the_direct_error_and_beats_the_old_weights():
    """refit_shared_input reads the error of its solution from the normal equations (no
    out x in x in product); it must be LinearRefit.error of that solution, and never above the
    error of the weights it replaced (the damped objective is no larger at its minimum)."""
    torch.manual_seed(1)
    x = torch.randn(400, 6, dtype=torch.float64)
    x[:, 2] *= 50.0
    y = x @ torch.randn(5, 6, dtype=torch.float64).T + 0.3 * torch.randn(400, 5, dtype=torch.float64)
    linears = [torch.nn.Linear(6, 2, bias=False).double(), torch.nn.Linear(6, 3, bias=False).double()]
    w0 = [linear.weight.data.clone() for linear in linears]
    refit = LinearRefit(product_dtype=torch.float64)
    refit.add(x, y)
    reports = refit_shared_input(linears, refit, damp=0.5)
    start = 0
    for linear, weight0, report in zip(linears, w0, reports):
        part = refit.rows(start, start + linear.out_features)
        assert report["mse"] == pytest.approx(part.error(linear.weight.data), rel=1e-9)
        assert report["relative"] == pytest.approx(report["mse"] * part.count / float(part.yy.sum()), rel=1e-12)
        assert report["mse"] < part.error(weight0)
        torch.testing.assert_close(linear.weight.data, ridge_toward(weight0, part, 0.5))  # rows are independent problems
        start += linear.out_features


# ------------------------------------------------------------------ allocation and units

def test_default_layer_range_is_the_papers_and_scales_for_shallow_models():
    assert default_layer_range(32) == (4, 30)  # LLaMA-7B: blocks 4..29 pruned
    assert default_layer_range(30) == (4, 28)  # SmolLM2
    assert default_layer_range(2) == (0, 2)
    assert default_layer_range(8) == (1, 7)


def test_layer_ratio_counts_blocks_or_all_parameters():
    geometries = [GQA] * 4
    assert layer_ratio(geometries, 0.2, (0, 4)) == pytest.approx(0.2)
    assert layer_ratio(geometries, 0.2, (1, 3)) == pytest.approx(0.4)  # half the blocks carry the whole cut
    total = 10 * GQA.block_params
    assert layer_ratio(geometries, 0.2, (0, 4), "total", total) == pytest.approx(0.2 * 10 / 4)
    with pytest.raises(ValueError, match="widen the layer range"):
        layer_ratio(geometries, 0.5, (3, 4))


def test_uniform_budgets_matched_and_llm_pruner_rounding():
    # matched: 1 of 3 heads per group at 30 % (round half up of 0.9), neurons take the rest
    budgets = uniform_budgets([GQA] * 3, 0.3, (1, 3), "within_kv_groups", "matched")
    assert budgets[0] == LayerBudget(0, 0)
    removed_attn = 1 * 2 * (2 * 48 * 4)
    assert budgets[1].heads == 1
    assert budgets[1].neurons == round((0.3 * GQA.block_params - removed_attn) / (3 * 48))
    # per_module (LLM-Pruner's MetaPruner): k_proj has 2 * 4 = 8 channels; at 30 % int(8 * 0.7) = 5 stay,
    # 3 channels < one head of 4: no kv group goes; the MLP keeps int(64 * 0.7) = 44 (20 go)
    assert uniform_budgets([GQA], 0.3, (0, 1), "kv_groups", "per_module") == [LayerBudget(0, 20)]
    assert uniform_budgets([GQA], 0.5, (0, 1), "kv_groups", "per_module") == [LayerBudget(1, 32)]
    # SmolLM2 at 25 %: 192 k channels, int(144) = 144 stay, 48 // 64 = 0 kv groups; MLP 1536 -> 1152
    smol = LayerGeometry(num_heads=9, num_kv_heads=3, head_dim=64, hidden_size=576, intermediate_size=1536)
    assert uniform_budgets([smol], 0.25, (0, 1), "kv_groups", "per_module") == [LayerBudget(0, 384)]
    # LLaMA-3-8B's README run: 2 of 8 kv groups and 3584 of 14336 neurons per pruned layer
    llama3 = LayerGeometry(num_heads=32, num_kv_heads=8, head_dim=128, hidden_size=4096, intermediate_size=14336)
    assert uniform_budgets([llama3], 0.25, (0, 1), "kv_groups", "per_module") == [LayerBudget(2, 3584)]


def test_mlp_only_budget_keeps_every_head_and_moves_the_target_to_neurons():
    smol = LayerGeometry(num_heads=9, num_kv_heads=3, head_dim=64, hidden_size=576, intermediate_size=1536)
    # 25 % of a SmolLM2 block (3,538,944 params) over neurons of 3 * 576 params: 512 of 1536 go
    assert uniform_budgets([smol, smol], 0.25, (1, 2), "within_kv_groups", "mlp_only") == [LayerBudget(0, 0), LayerBudget(0, 512)]
    with pytest.raises(ValueError, match="would remove every MLP neuron"):
        uniform_budgets([smol], 0.9, (0, 1), "within_kv_groups", "mlp_only")


def test_round_kept_neurons_keeps_the_nearest_multiple_and_spares_whole_layers():
    smol = LayerGeometry(num_heads=9, num_kv_heads=3, head_dim=64, hidden_size=576, intermediate_size=1536)
    budgets = [LayerBudget(0, 0), LayerBudget(1, 341), LayerBudget(0, 513), LayerBudget(0, 1530), LayerBudget(0, 3)]
    # kept 1195 -> 1192 (149.4 x 8), 1023 -> 1024 (127.9 x 8), 6 -> 8, 1533 -> 1536 (the layer stays whole)
    assert round_kept_neurons(budgets, [smol] * 5, 8) == [
        LayerBudget(0, 0), LayerBudget(1, 344), LayerBudget(0, 512), LayerBudget(0, 1528), LayerBudget(0, 0)]
    assert round_kept_neurons(budgets, [smol] * 5, 1) == budgets
    odd = LayerGeometry(num_heads=9, num_kv_heads=3, head_dim=64, hidden_size=576, intermediate_size=1539)
    assert round_kept_neurons([LayerBudget(0, 1)], [odd], 8) == [LayerBudget(0, 3)]  # kept 1538 -> 1536
    assert round_kept_neurons([LayerBudget(0, 1)], [odd], 512) == [LayerBudget(0, 3)]  # 1538 -> 1536
    with pytest.raises(ValueError, match="round_to 1024 is more than half the pruned layers' 1539 MLP neurons"):
        round_kept_neurons([LayerBudget(0, 1)], [odd], 1024)  # a "20 %" row would remove nothing (issue #26)
    with pytest.raises(ValueError, match="round_to must be >= 1"):
        round_kept_neurons(budgets, [smol] * 5, 0)


def test_round_to_reaches_the_pruned_widths_through_the_engine(model):
    scores = score_model(model, "l2")
    recipe = Recipe("l2", layers=[1, 2], heads="kv_groups", round_to=8)
    pruned = prune_with_recipe(copy.deepcopy(model), recipe, 0.3, scores=scores, progress=False)
    exact = prune_with_recipe(copy.deepcopy(model), Recipe("l2", layers=[1, 2], heads="kv_groups"), 0.3, scores=scores, progress=False)
    kept, exact_kept = len(pruned.plan.layers[1].keep_neurons), len(exact.plan.layers[1].keep_neurons)
    assert kept % 8 == 0 and abs(kept - exact_kept) <= 4 and kept != exact_kept  # the tiny model's exact width is no multiple of 8
    assert len(pruned.plan.layers[0].keep_neurons) == model.config.intermediate_size  # outside the range: whole
    assert any("round_to" in p for p in recipe_problems(Recipe("l2", round_to=0)))


def test_global_budgets_reproduce_flap_threshold_plan(model, input_ids):
    stats, _ = collect_statistics(model, input_ids, progress=False)
    scores = score_model(model, "flap", stats)
    geometries = model_geometries(model)
    plan = plan_global(scores, geometries, 0.3)
    budgets = global_budgets(scores, geometries, 0.3, (0, len(geometries)))
    for g, b, lp in zip(geometries, budgets, plan.layers):
        assert g.num_kv_heads - len(lp.keep_kv_heads) == b.heads
        assert g.intermediate_size - len(lp.keep_neurons) == b.neurons
    only_last = global_budgets(scores, geometries, 0.3, (1, 2))
    assert only_last[0] == LayerBudget(0, 0) and only_last[1] != LayerBudget(0, 0)


def test_global_mlp_only_ranks_neurons_alone_across_layers():
    """Ours: FLAP's threshold over neurons only. Two layers of 144 block parameters (attention
    48, eight neurons of 12); at a 25 % layer ratio the neurons keep 0.75 * 288 - 96 = 120,
    ten neurons; the cumulative weight meets 120 at the tenth, which FLAP's rule drops too."""
    tiny = LayerGeometry(num_heads=2, num_kv_heads=1, head_dim=2, hidden_size=4, intermediate_size=8)
    scores = {
        "layers.0.heads": torch.tensor([-1e9, -1e9]),  # the lowest scores, yet no head is ranked
        "layers.0.neurons": torch.tensor([1.0, 3, 5, 7, 9, 11, 13, 15]),
        "layers.1.heads": torch.tensor([-1e9, -1e9]),
        "layers.1.neurons": torch.tensor([2.0, 4, 6, 8, 10, 12, 14, 16]),
    }
    budgets = global_budgets(scores, [tiny, tiny], 0.25, (0, 2), "within_kv_groups", "mlp_only")
    # kept: 16 15 14 13 12 11 10 9 8 (five of layer 1, four of layer 0)
    assert budgets == [LayerBudget(0, 4), LayerBudget(0, 3)]
    with pytest.raises(ValueError, match="remove every MLP neuron"):
        global_budgets(scores, [tiny, tiny], 0.7, (0, 2), "within_kv_groups", "mlp_only")
    with pytest.raises(ValueError, match="per_module"):
        global_budgets(scores, [tiny, tiny], 0.25, (0, 2), "kv_groups", "per_module")


def test_global_mlp_only_keeps_attention_and_removes_the_block_target(model, input_ids):
    recipe = Recipe("distribution", options={"mlp": "output", "redundancy": "none"}, allocation="global", budget="mlp_only")
    assert recipe_problems(recipe) == []
    stats, _ = collect_statistics(model, input_ids, progress=False)
    geometries = model_geometries(model)
    dense_blocks = sum(g.block_params for g in geometries)
    result = prune_with_recipe(copy.deepcopy(model), recipe, 0.2, scores=score_model(model, "distribution", stats, recipe.options),
                               progress=False)
    assert all(b.heads == 0 for b in result.budgets)
    assert len({b.neurons for b in result.budgets}) > 1  # the layers lose different counts
    removed = sum(b.neurons for b in result.budgets) * 3 * geometries[0].hidden_size
    assert abs(removed - 0.2 * dense_blocks) <= 2 * 3 * geometries[0].hidden_size  # within a neuron or two
    assert torch.isfinite(result.model(input_ids).logits).all()


def test_select_units_takes_the_lowest_in_every_group():
    heads = torch.tensor([5.0, 1.0, 3.0, 0.5, 9.0, 2.0])
    lp = select_units(heads, torch.arange(64.0), GQA, LayerBudget(1, 10), "within_kv_groups")
    assert lp.keep_heads == [0, 2, 4, 5] and lp.keep_kv_heads == [0, 1]
    assert lp.keep_neurons == list(range(10, 64))
    lp = select_units(heads, torch.arange(64.0), GQA, LayerBudget(1, 0), "kv_groups")
    assert lp.keep_kv_heads == [1] and lp.keep_heads == [3, 4, 5]  # group 0 sums 9 < 11.5


# ------------------------------------------------------------------ recipes

def test_recipe_validation_names_the_reason():
    assert recipe_problems(Recipe("distribution", flow="sequential", reconstruct="paper")) == []
    assert any("set heads: kv_groups" in p for p in recipe_problems(Recipe("flap", allocation="global")))
    assert recipe_problems(Recipe("flap", allocation="global", budget="mlp_only")) == []  # neurons alone: any head unit
    assert any("'per_module' applies to the uniform" in p for p in recipe_problems(Recipe("flap", heads="kv_groups", allocation="global", budget="per_module")))
    assert any("cannot be recomputed on a pruned stream" in p for p in recipe_problems(Recipe("taylor", flow="sequential")))
    assert any("'protocol', 'all'" in p for p in recipe_problems(Recipe("l2", layers=[5, 2])))
    assert any("unknown" in p for p in recipe_problems(Recipe("nope")))


def test_recipe_statistics_table_agrees_with_the_registry():
    for name, method in REGISTRY.items():
        expected = "none" if not method.needs_calibration else method.statistics
        assert SCORE_STATISTICS[name] == expected


# ------------------------------------------------------------------ the engine

def test_dense_flow_without_refit_equals_the_plan_composition(model):
    scores = score_model(model, "l1")
    expected = plan_uniform(scores, model_geometries(model), 0.3, layer_range=(1, 2))
    result = prune_with_recipe(copy.deepcopy(model), Recipe("l1", layers=[1, 2]), 0.3, scores=scores, progress=False)
    assert result.plan == expected and result.layer_range == (1, 2)


@pytest.mark.parametrize("reconstruct", ["refit", "paper"])
def test_refits_at_sparsity_zero_keep_the_dense_model(model, input_ids, reconstruct):
    dense = copy.deepcopy(model)
    recipe = Recipe("distribution", flow="sequential", reconstruct=reconstruct, damp=0.0)
    result = prune_with_recipe(model, recipe, 0.0, samples=input_ids, batch_size=3, progress=False)
    torch.testing.assert_close(result.model(input_ids).logits, dense(input_ids).logits, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("reconstruct", ["refit", "paper"])
def test_refits_report_their_least_squares_error_per_map(model, input_ids, reconstruct):
    recipe = Recipe("l1", flow="sequential", reconstruct=reconstruct, damp=0.01)
    result = prune_with_recipe(model, recipe, 0.4, samples=input_ids, batch_size=3, progress=False)
    maps = {"refit": {"o_proj", "down_proj"}, "paper": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
    refitted = [r for r in result.reports if "o_proj" in r]
    assert refitted
    for report in refitted:
        assert maps[reconstruct] <= set(report), report
        for name in maps[reconstruct]:
            assert report[name]["mse"] >= 0 and 0 <= report[name]["relative"] < 1, (report["layer"], name)


@pytest.mark.parametrize("reconstruct", ["refit", "paper"])
def test_reconstruction_brings_the_pruned_model_closer_to_dense(model, input_ids, reconstruct):
    dense_logits = model(input_ids).logits
    plain = copy.deepcopy(model)
    prune_model(plain, plan_uniform(score_model(plain, "l1"), model_geometries(plain), 0.4))
    recipe = Recipe("l1", flow="sequential", reconstruct=reconstruct)
    recovered = prune_with_recipe(model, recipe, 0.4, samples=input_ids, batch_size=3, progress=False).model
    plain_err = (plain(input_ids).logits - dense_logits).pow(2).mean()
    assert (recovered(input_ids).logits - dense_logits).pow(2).mean() < plain_err


def test_paper_reconstruction_refits_the_first_level_of_layers_after_a_cut(model, input_ids):
    dense = copy.deepcopy(model)
    recipe = Recipe("distribution", flow="sequential", reconstruct="paper", layers=[0, 1])
    result = prune_with_recipe(model, recipe, 0.2, samples=input_ids, batch_size=3, progress=False)
    assert result.plan.layers[1].keep_neurons == list(range(dense.config.intermediate_size))  # layer 1 not pruned
    after, before = result.model.model.layers[1], dense.model.layers[1]
    assert not torch.allclose(after.self_attn.q_proj.weight, before.self_attn.q_proj.weight)  # refit on X^
    assert not torch.allclose(after.mlp.gate_proj.weight, before.mlp.gate_proj.weight)


def test_block_target_tracks_the_dense_output_stream_better_than_module_target(model, input_ids):
    def final_hidden(m):
        return m(input_ids, output_hidden_states=True).hidden_states[-1]

    dense_out = final_hidden(model)
    errors = {}
    for target in ("block", "module"):
        recipe = Recipe("l1", flow="sequential", reconstruct="refit", target=target)
        recovered = prune_with_recipe(copy.deepcopy(model), recipe, 0.4, samples=input_ids, batch_size=3, progress=False).model
        errors[target] = float((final_hidden(recovered) - dense_out).pow(2).mean())
    assert errors["block"] < errors["module"]


def test_sequential_bias_compensation_gives_every_layer_a_bias(model, input_ids):
    recipe = Recipe("flap", heads="kv_groups", allocation="global", flow="sequential", reconstruct="bias", layers=[1, 2])
    stats, _ = collect_statistics(model, input_ids, progress=False)
    result = prune_with_recipe(model, recipe, 0.2, scores=score_model(model, "flap", stats), samples=input_ids, progress=False)
    assert all(layer.mlp.down_proj.bias is not None for layer in result.model.model.layers)
    assert torch.isfinite(result.model(input_ids).logits).all()


def test_engine_names_missing_inputs(model):
    with pytest.raises(ValueError, match="pass them \\(--data\\)"):
        prune_with_recipe(model, Recipe("l2", reconstruct="paper"), 0.2, scores=score_model(model, "l2"))
    with pytest.raises(ValueError, match="--scores"):
        prune_with_recipe(model, Recipe("l2"), 0.2)


def test_multi_head_attention_removes_whole_heads_in_either_mode():
    mha = LayerGeometry(num_heads=32, num_kv_heads=32, head_dim=128, hidden_size=4096, intermediate_size=11008)
    matched = uniform_budgets([mha], 0.25, (0, 1), "within_kv_groups", "matched")[0]
    assert matched.heads == 8  # round(0.25 * 32) heads, each with its own k/v rows
    # LLM-Pruner's hf_prune.py on LLaMA-7B at 25 %: int(4096 * 0.75) = 3072 q channels stay -> 8 heads go
    assert uniform_budgets([mha], 0.25, (0, 1), "within_kv_groups", "per_module")[0] == LayerBudget(8, 11008 - 8256)
    lp = select_units(torch.arange(32.0), torch.arange(11008.0), mha, matched, "within_kv_groups")
    assert lp.keep_heads == lp.keep_kv_heads == list(range(8, 32))


def test_option_names_read_from_source_match_the_registry():
    import inspect

    from structprune.spec.scoreoptions import score_options

    names = score_options()
    assert set(names) == set(REGISTRY)
    for name, method in REGISTRY.items():
        assert names[name] == list(inspect.signature(method.make).parameters), name


@pytest.mark.parametrize(("reconstruct", "passes"), [
    ("refit", {"layer": 2, "self_attn": 2, "gate_proj": 3, "down_proj": 3}),
    ("paper", {"layer": 1, "self_attn": 2, "gate_proj": 2, "down_proj": 2}),
])
def test_the_dense_layer_runs_once_per_layer(model, input_ids, reconstruct, passes):
    """Refit: one dense pass (its taps serve both refits), one pruned layer pass, then the pruned
    MLP half alone up to down_proj's input; the pruned stream advances from kept tensors (one
    down_proj call). Paper: one dense layer pass, then the pruned attention half alone (o_proj's
    inputs are kept) and the pruned MLP half alone up to down_proj's input."""
    model = copy.deepcopy(model)
    calls = {}
    layer = model.model.layers[1]
    for name, module in {"layer": layer, "self_attn": layer.self_attn}.items():
        module.register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))

    def count_projections(module, _args):  # the layer's gate/down as they are at call time (pruning replaces them)
        for name in ("gate_proj", "down_proj"):
            if module is getattr(layer.mlp, name):
                calls[name] = calls.get(name, 0) + 1

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count_projections)
    recipe = Recipe("distribution", flow="sequential", reconstruct=reconstruct, layers=[1, 2])
    try:
        prune_with_recipe(model, recipe, 0.3, samples=input_ids, batch_size=input_ids.shape[0], progress=False)
    finally:
        handle.remove()  # a global hook: it must not count other tests' modules
    assert calls == passes  # the pruned layer; batch_size = all samples: one call per pass


def test_the_sequential_flow_collects_only_what_its_score_reads_and_prunes_the_same(model, input_ids, monkeypatch):
    from structprune.calibration import statistics

    recipe = Recipe("distribution", options={"mlp": "output", "redundancy": "none"}, flow="sequential",
                    reconstruct="refit", layers=[0, 2])
    lean = prune_with_recipe(copy.deepcopy(model), recipe, 0.3, samples=input_ids, batch_size=3, progress=False).model
    collected = []
    original = statistics.LayerStatistics.for_needs.__func__

    def everything(cls, needs, kept_sites=None):
        collected.append(needs)
        return cls()  # every site, full moment and the attention divergences, as before

    monkeypatch.setattr(statistics.LayerStatistics, "for_needs", classmethod(everything))
    full = prune_with_recipe(copy.deepcopy(model), recipe, 0.3, samples=input_ids, batch_size=3, progress=False).model
    assert collected and all(n.full_sites == {"o_proj_in"} and not n.attention_js for n in collected)
    for (name, a), b in zip(lean.state_dict().items(), full.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert original is not None


def test_the_paper_recovery_reads_full_moments_from_its_refits_gram_matrices(model, input_ids, monkeypatch):
    """o_proj_in's and mlp_in's full second moments come from the o_proj and gate/up refits'
    X^X^^T: the same numbers as accumulating them again in the statistics hooks."""
    from structprune.calibration import statistics

    recipe = Recipe("distribution", flow="sequential", reconstruct="paper", layers=[0, 2])
    shared = prune_with_recipe(copy.deepcopy(model), recipe, 0.3, samples=input_ids, batch_size=3, progress=False)
    requested = []

    def own_moments(cls, needs, kept_sites=statistics.SITES):
        requested.append(needs.full_sites)
        return cls(full_sites=statistics.FULL_SITES, attention_js=needs.attention_js, kept_sites=kept_sites)  # every site keeps its own

    monkeypatch.setattr(statistics.LayerStatistics, "for_needs", classmethod(own_moments))
    own = prune_with_recipe(copy.deepcopy(model), recipe, 0.3, samples=input_ids, batch_size=3, progress=False)
    # the default score needs both in full: the attention pass leaves o_proj_in's to its refit, the MLP pass mlp_in's
    assert requested == [frozenset({"mlp_in"}), frozenset({"o_proj_in"})] * 2
    assert shared.plan == own.plan
    for (name, a), b in zip(shared.model.state_dict().items(), own.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_attention_statistics_restricted_to_kept_heads_equal_a_pass_through_the_pruned_attention(model, input_ids):
    """The paper's recovery scores neurons on attention statistics restricted to the kept heads
    instead of running the pruned attention again: the two must agree."""
    from structprune.calibration.statistics import LayerStatistics, restrict_to_heads
    from structprune.calibration.streams import capture_layer_inputs, propagate
    from structprune.model.geometry import model_head_dim
    from structprune.pruning.slicing import prune_attention

    model = copy.deepcopy(model)
    layer, head_dim = model.model.layers[0], model_head_dim(model.config)
    batches = capture_layer_inputs(model, input_ids, 3)

    def moments():
        stats = LayerStatistics()
        handles = stats.attach(layer)
        propagate(layer, [type(b)(b.hidden, b.layer_kwargs) for b in batches])
        for handle in handles:
            handle.remove()
        return stats.moments()

    before = moments()
    keep_heads, keep_kv = [0, 2, 3, 5], [0, 1]  # 6 query heads over 2 kv groups: two of each group stay
    prune_attention(layer, keep_heads, keep_kv, head_dim)
    after, restricted = moments(), restrict_to_heads(before, keep_heads, head_dim)
    for key in ("o_proj_in.mean", "o_proj_in.second_moment", "attn_js.divergence", "attn_in.second_moment"):
        assert restricted[key].shape == after[key].shape, key
        torch.testing.assert_close(restricted[key], after[key], rtol=1e-5, atol=1e-7, msg=key)
    assert before["o_proj_in.second_moment"].shape[0] == 6 * head_dim


def test_statistics_of_one_half_of_a_layer_keep_only_that_halfs_sites(model, input_ids):
    from structprune.calibration.statistics import LayerStatistics
    from structprune.calibration.streams import capture_layer_inputs

    layer = model.model.layers[0]
    hidden = capture_layer_inputs(model, input_ids, 6)[0].hidden
    stats = LayerStatistics(attention_js=False)
    handles = stats.attach(layer)
    with torch.no_grad():
        layer.mlp(layer.post_attention_layernorm(hidden))
    for handle in handles:
        handle.remove()
    assert {k.split(".")[0] for k in stats.moments()} == {"mlp_in", "down_proj_in"}
    with pytest.raises(ValueError, match="no activations"):
        LayerStatistics().moments()


def test_first_level_refit_fits_the_dense_maps_output_less_its_bias(model):
    """The paper's first-level refit fits each map's weight to W X (the dense output less its
    bias, which stays) from X^X^^T and Y X^^T = W (X X^^T): the same weights as a direct least
    squares fit of W X on X^, whatever the bias; the reported energy is ||W X||^2."""
    from structprune.calibration.densestream import output_energy
    from structprune.pruning.reconstruction import LinearRefit, ridge_toward
    from structprune.pruning.refitflow import refit_first_level

    names = ["mlp.gate_proj", "mlp.up_proj"]
    g = torch.Generator().manual_seed(0)
    hidden = model.config.hidden_size
    inputs = [torch.randn(2, 7, hidden, generator=g) for _ in range(3)]
    dense_inputs = [x + 0.3 * torch.randn(x.shape, generator=g) for x in inputs]
    dense_weights = [model.model.layers[0].get_submodule(n).weight.data.clone() for n in names]
    results = []
    for bias in (False, True):
        layer = copy.deepcopy(model.model.layers[0])
        if bias:
            for name in names:
                old = layer.get_submodule(name)
                new = torch.nn.Linear(old.in_features, old.out_features, bias=True)
                new.weight.data, new.bias.data = old.weight.data.clone(), torch.randn(old.out_features, generator=g)
                setattr(layer.mlp, name.split(".")[1], new)
        biases = [None if layer.get_submodule(n).bias is None else layer.get_submodule(n).bias.data.clone() for n in names]
        with torch.no_grad():
            taps = [{("post_attention_layernorm", "out"): xd,
                     **{(n, "energy"): output_energy(layer.get_submodule(n), layer.get_submodule(n)(xd)) for n in names}}
                    for xd in dense_inputs]
        report, _ = refit_first_level(layer, names, inputs, 0.1, taps)
        results.append(([layer.get_submodule(n).weight.data.clone() for n in names], report))
        for name, b in zip(names, biases):
            if b is not None:
                assert torch.equal(layer.get_submodule(name).bias.data, b)  # the bias stays
    (plain, plain_report), (biased, biased_report) = results
    for a, b in zip(plain, biased):
        assert torch.equal(a, b)
    for key, errors in plain_report.items():  # the biased energy is taken from the output less the bias
        assert errors == pytest.approx(biased_report[key], rel=1e-5)
    for name, w0, w in zip(names, dense_weights, plain):  # a direct fit of each map, in float64
        direct = LinearRefit(product_dtype=torch.float64)
        for x, xd in zip(inputs, dense_inputs):
            direct.add(x.double(), xd.double() @ w0.double().T)
        torch.testing.assert_close(w, ridge_toward(w0, direct, 0.1), rtol=1e-4, atol=1e-6)
        energy = float(direct.yy.sum()) / direct.count
        assert plain_report[name.rsplit(".", 1)[1]]["relative"] == pytest.approx(direct.error(w.double()) / energy, rel=1e-3)


def test_slimgpt_increasing_ratios_reproduce_the_references_twenty_percent_schedule():
    """SlimGPT's README run for 20 % on a 32-layer model: 0.0625 at the first layer rising as
    ln(1 + k) / ln 32 to 0.25 at the last; asked for that schedule's mean, we give it back."""
    import math

    from structprune.pruning.allocation import increasing_ratios

    reference = [0.0625 + 0.1875 * math.log(1 + k) / math.log(32) for k in range(32)]
    ratios = increasing_ratios(32, sum(reference) / 32)
    assert ratios == pytest.approx(reference, rel=1e-12)
    assert increasing_ratios(1, 0.3) == [0.3] and increasing_ratios(0, 0.3) == []
    assert sum(increasing_ratios(24, 0.25)) / 24 == pytest.approx(0.25)


def test_the_increasing_allocation_prunes_deeper_layers_more_and_hits_the_target():
    from tiny import tiny_llama

    from structprune.model.geometry import count_parameters

    model = tiny_llama(160, layers=6)
    recipe = Recipe("l2", allocation="increasing", budget="matched", layers=[1, 5])
    before = count_parameters(model)["decoder_blocks"]
    scores = score_model(model, "l2")
    result = prune_with_recipe(model, recipe, 0.2, scores=scores, progress=False)
    neurons = [b.neurons for b in result.budgets]
    assert neurons[0] == neurons[5] == 0 and neurons[1] < neurons[2] < neurons[3] < neurons[4]
    removed = 1 - count_parameters(result.model)["decoder_blocks"] / before
    assert removed == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError, match="increasing schedule would remove"):
        prune_with_recipe(tiny_llama(160, layers=6), recipe, 0.5, scores=scores, progress=False)  # 75 % on average
