"""The searched allocation (ours, pruning/layersearch.py): per-layer ratios from probes of each
layer alone, chosen exactly under the additive model, removing the uniform ratio's target."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import pytest
import torch

from structprune.model.geometry import count_parameters, model_geometries
from structprune.pruning.engine import allocate, prune_with_recipe
from structprune.pruning.layersearch import LEVELS, layer_costs, level_ratios, monotone_costs, searched_offsets
from structprune.spec.recipe import Recipe, recipe_problems
from test_depth import own_text, with_dead_blocks
from test_family_adapters import family_model

INF = math.inf


def test_the_cheap_layer_takes_the_extra_ratio():
    # one level each side: layer 0 loses little more at +1, layer 1 much more
    costs = torch.tensor([[0.0, 1.0, 1.5], [0.0, 1.0, 5.0]])
    assert searched_offsets(costs) == [1, -1]


def test_a_level_that_cannot_run_is_never_chosen():
    costs = torch.tensor([[0.0, 1.0, INF], [0.0, 1.0, 0.1]])
    assert searched_offsets(costs) == [-1, 1]


def test_ties_keep_the_uniform_ratio():
    costs = torch.tensor([[0.0, 1.0, 2.0]] * 4)  # linear costs: every zero-sum choice costs the same
    assert searched_offsets(costs) == [0, 0, 0, 0]


def test_a_dip_in_a_probe_is_not_chased():
    """Cutting more removes a superset of the units: a lower loss there is noise, floored."""
    costs = torch.tensor([[0.0, 1.0, 0.5], [0.3, 0.3, 1.5], [0.0, -0.1, INF]], dtype=torch.float64)
    assert monotone_costs(costs).tolist() == [[0.0, 1.0, 1.0], [0.3, 0.3, 1.5], [0.0, 0.0, INF]]
    assert searched_offsets(costs[:2]) == [1, -1]  # the raw dip at layer 0's top level is chased
    assert searched_offsets(monotone_costs(costs[:2])) == [0, 0]  # floored: no gain, uniform kept


def test_the_search_is_the_exhaustive_optimum():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        costs = torch.rand(4, 5, generator=generator, dtype=torch.float64)
        costs[torch.rand(4, 5, generator=generator) < 0.15] = INF
        costs[:, 2] = torch.rand(4, generator=generator, dtype=torch.float64)  # the uniform level always runs
        feasible = [(float(sum(costs[i, j + 2] for i, j in enumerate(c))), c)
                    for c in itertools.product(range(-2, 3), repeat=4) if sum(c) == 0]
        best = min(cost for cost, _ in feasible)
        found = searched_offsets(costs)
        assert sum(found) == 0
        assert float(sum(costs[i, j + 2] for i, j in enumerate(found))) == pytest.approx(best, rel=0, abs=1e-12)


def test_offsets_summing_to_zero_remove_the_uniform_target_on_unequal_layers():
    model = family_model("llama", layers=4)
    geometries = model_geometries(model)
    sizes = [g.block_params for g in geometries]
    assert len(set(sizes)) == 1
    ratios = level_ratios(geometries, 0.3, (0, 4))
    assert [round(r, 10) for r in ratios[0]] == [round(0.3 + j * 0.1, 10) for j in range(-LEVELS, LEVELS + 1)]
    # unequal sizes: the step is scaled by mean / size, so any zero-sum choice removes the target
    unequal = [dataclasses.replace(g, intermediate_size=g.intermediate_size * (i + 1)) for i, g in enumerate(geometries)]
    ratios = level_ratios(unequal, 0.3, (0, 4))
    target = 0.3 * sum(g.block_params for g in unequal)
    for offsets in ([3, -3, 1, -1], [0, 0, 0, 0], [-2, 2, -1, 1]):
        removed = sum(ratios[i][j + LEVELS] * g.block_params for i, (j, g) in enumerate(zip(offsets, unequal)))
        assert removed == pytest.approx(target, rel=1e-12)


def test_a_dead_layer_costs_nothing_at_every_level_and_takes_the_most():
    """Known answer: a block whose o_proj and down_proj are zero adds nothing, so cutting its
    units leaves the loss exactly as it is; every other layer's cut costs something."""
    model = with_dead_blocks(family_model("llama", layers=5), [2])
    ids = own_text(model, n=6, length=16)
    recipe = Recipe(score="wanda_sp", allocation="searched", layers=[1, 4], flow="sequential")
    geometries = model_geometries(model)
    ratios = level_ratios(geometries, 0.3, (1, 4))
    costs, dense_loss = layer_costs(model, recipe, ratios, (1, 4), ids, batch_size=2, progress=False)
    assert math.isfinite(dense_loss) and costs.shape == (3, 2 * LEVELS + 1)
    assert torch.all(costs[1][torch.isfinite(costs[1])] == 0)
    assert costs[0].abs().max() > 0 and costs[2].abs().max() > 0
    _, _, _, search = allocate(recipe, model, 0.3 * 3 / 5, None, ids, batch_size=2)
    assert search["offsets"][1] == max(j for j in range(-LEVELS, LEVELS + 1) if math.isfinite(costs[1, j + LEVELS]))
    assert sum(search["offsets"]) == 0


def test_a_searched_prune_removes_the_target_and_records_the_search():
    model = family_model("qwen3", layers=6)
    ids = own_text(model, n=6, length=16)
    recipe = Recipe(score="distribution", options={"mlp": "output", "redundancy": "none"}, allocation="searched",
                    budget="mlp_only", flow="sequential", reconstruct="refit", layers=[1, 5])
    before = count_parameters(model)["decoder_blocks"]
    uniform = prune_with_recipe(copy.deepcopy(model), Recipe(**{**recipe.to_json(), "allocation": "uniform"}), 0.3,
                                samples=ids, batch_size=2, progress=False)
    result = prune_with_recipe(model, recipe, 0.3, samples=ids, batch_size=2, progress=False)
    removed = 1 - count_parameters(result.model)["decoder_blocks"] / before
    uniform_removed = 1 - count_parameters(uniform.model)["decoder_blocks"] / before
    neuron_share = 3 * model.config.hidden_size / before  # one neuron's share: the rounding of each layer's budget
    assert abs(removed - uniform_removed) <= 4 * neuron_share
    search = result.notes["allocation_search"]
    assert search["strategy"] == "searched" and len(search["ratios"]) == 4 and sum(search["offsets"]) == 0
    assert result.model(ids).logits.isfinite().all()


def test_searched_needs_samples_and_refuses_slimgpts_own_loop():
    assert Recipe(score="flap", allocation="searched").needs_samples
    problems = recipe_problems(Recipe(score="obs", allocation="searched", flow="sequential", reconstruct="obs"))
    assert any("allocation 'searched'" in p for p in problems)
