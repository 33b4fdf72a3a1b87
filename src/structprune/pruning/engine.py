"""The one layer-wise loop every pruning run goes through.

A `Recipe` (recipe.py) picks a score, a unit, an allocation, a flow and a reconstruction;
`prune_with_recipe` carries it out:

1. allocation: how many units each layer loses (`allocation.py`; the global allocation reads
   the dense model's scores, the searched one probes the model on calibration text: `layersearch.py`);
2. with the dense flow and no refit, every layer's units are selected from the dense scores
   and sliced at once (no forward pass; bias compensation uses the dense statistics);
3. otherwise calibration samples enter layer 0 and, layer by layer (sparsegpt's pattern),
   the pruned stream X^ (and, when a refit needs targets, the dense stream X) is run through
   the layer with hooks: statistics for scoring (sequential flow), pairs for least squares
   (reconstruction), then the layer is sliced and both streams advance, the dense one through
   the dense layer before it is changed, or read from a cache of it (`densestream.py`).
   Memory: one layer's statistics plus the streams' hidden states.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from structprune.calibration.densestream import CachedDenseStream, LiveDenseStream
from structprune.calibration.streams import capture_layer_inputs, propagate
from structprune.model.device import execution_device, layer_on_device
from structprune.model.geometry import (
    count_parameters,
    decoder_layers,
    layer_geometry,
    model_geometries,
    model_head_dim,
)
from structprune.pruning import refitflow
from structprune.pruning.allocation import (
    budgets_at,
    global_budgets,
    increasing_budgets,
    layer_ratio,
    resolve_layer_range,
    round_kept_neurons,
    uniform_budgets,
)
from structprune.pruning.layerstep import LayerContext, sequential_layer
from structprune.pruning.planning import check_scores, plan_from_budgets
from structprune.pruning.scores import score_method
from structprune.pruning.slicing import prune_model, with_plan_widths
from structprune.pruning.units import LayerBudget, PrunePlan, select_units
from structprune.spec.recipe import Recipe, recipe_problems

log = logging.getLogger(__name__)

@dataclass
class EngineResult:
    model: nn.Module
    plan: PrunePlan
    budgets: list[LayerBudget]
    layer_range: tuple[int, int]
    ratio: float  # fraction of each pruned layer's block parameters the allocation targets
    reports: list[dict] = field(default_factory=list)  # per layer: reconstruction errors
    notes: dict = field(default_factory=dict)  # for the manifest: allocation_search (the probes, the ratios), depth (dropped blocks)


def check_recipe(recipe: Recipe, scores, stats, samples, model_config: dict | None = None) -> None:
    problems = recipe_problems(recipe)
    if recipe.refits and model_config is not None:
        from structprune.model.families import refit_problem

        if problem := refit_problem(model_config, "the model", recipe):
            problems.append(problem)
    if recipe.reads_score_file and scores is None:
        problems.append("this recipe selects or allocates from the dense model's scores: pass them (--scores)")
    if recipe.needs_samples and samples is None:
        problems.append("this recipe runs calibration samples through the layers: pass them (--data)")
    if recipe.needs_dense_moments and stats is None:
        problems.append("bias compensation in the dense flow needs the dense calibration statistics (--stats)")
    if problems:
        raise ValueError("cannot run this method: " + "; ".join(problems))


def allocate(recipe: Recipe, model: nn.Module, sparsity: float, scores, samples: torch.Tensor | None = None,
             batch_size: int = 8, dropped: tuple[int, ...] = ()) -> tuple[list[LayerBudget], tuple[int, int], float, dict | None]:
    """Every layer's budget, the pruned range, the uniform ratio, and the search's report
    (`allocation: searched` only: layersearch.py probes the model on `samples`). `dropped`:
    blocks a depth share removes first (mixed.py): they lose nothing here, the rest more."""
    geometries = model_geometries(model)
    layer_range = resolve_layer_range(recipe.layers, len(geometries))
    total = count_parameters(model)["total"]
    ratio = layer_ratio(geometries, sparsity, layer_range, recipe.sparsity_of, total)
    search = None
    if dropped:
        from structprune.pruning.mixed import width_ratios

        ratios = width_ratios(geometries, ratio, layer_range, list(dropped), recipe.allocation)
        budgets = budgets_at(geometries, ratios, layer_range, recipe.heads, recipe.budget)
    elif recipe.allocation == "global":
        check_scores(scores, geometries)
        budgets = global_budgets(scores, geometries, ratio, layer_range, recipe.heads, recipe.budget)
    elif recipe.allocation == "increasing":
        budgets = increasing_budgets(geometries, ratio, layer_range, recipe.heads, recipe.budget)
    elif recipe.allocation == "searched":
        from structprune.pruning.layersearch import searched_ratios

        ratios, search = searched_ratios(model, recipe, geometries, ratio, layer_range, samples, batch_size, scores)
        budgets = budgets_at(geometries, ratios, layer_range, recipe.heads, recipe.budget)
    else:
        budgets = uniform_budgets(geometries, ratio, layer_range, recipe.heads, recipe.budget)
    return round_kept_neurons(budgets, geometries, recipe.round_to), layer_range, ratio, search


def prune_with_recipe(
    model: nn.Module, recipe: Recipe, sparsity: float, *, scores: dict | None = None, stats: dict | None = None,
    samples: torch.Tensor | None = None, batch_size: int = 8, progress: bool = True,
    dense_stream: str | None = None, depth_order: dict | None = None,
) -> EngineResult:
    """Prune `model` (in place where possible) as `recipe` says; see the module docstring.
    `dense_stream`: a `densestream.record_dense_stream` folder of the same model and samples,
    read instead of running the dense layers (refits only; the same numbers, bitwise).
    `depth_order`: a greedy depth criterion's full order (depth.greedy_order), read instead of
    searching (the same removal)."""
    check_recipe(recipe, scores, stats, samples, model.config.to_dict())
    if recipe.unit != "width":
        return _prune_depth(model, recipe, sparsity, samples, batch_size, depth_order)
    if scores is not None:
        check_scores(scores, model_geometries(model))
    dropped, depth = [], None
    if recipe.depth_share:
        from structprune.pruning.mixed import blocks_to_drop

        dropped, depth = blocks_to_drop(model, recipe, sparsity, samples, batch_size)
    budgets, layer_range, ratio, search = allocate(recipe, model, sparsity, scores, samples, batch_size, tuple(dropped))
    if not recipe.needs_samples:
        plan = plan_from_budgets(scores, model_geometries(model), budgets, recipe.heads)
        means = stats if recipe.reconstruct == "bias" else None
        return EngineResult(prune_model(model, plan, means), plan, budgets, layer_range, ratio)
    result = _stream_prune(model, recipe, budgets, layer_range, ratio, scores, samples, batch_size, progress,
                           dense_stream, set(dropped))
    return replace(result, notes={k: v for k, v in {"allocation_search": search, "depth": depth}.items() if v})


def _prune_depth(model: nn.Module, recipe: Recipe, sparsity: float, samples: torch.Tensor, batch_size: int,
                 order: dict | None = None) -> EngineResult:
    """Whole blocks or sublayers (pruning/depth.py) of the recipe's range, as many as bring the
    removed parameters nearest `sparsity` of the block (or all) parameters."""
    from structprune.pruning.depth import prune_depth

    layer_range = resolve_layer_range(recipe.layers, len(decoder_layers(model)))
    target = sparsity * count_parameters(model)["decoder_blocks" if recipe.sparsity_of == "blocks" else "total"]
    model, plan, report = prune_depth(model, recipe.unit, recipe.score, list(range(*layer_range)), target,
                                      samples, batch_size, order)
    return EngineResult(model, plan, [], layer_range, sparsity, [report])


# --------------------------------------------------------------------------- the layer loop

def _stream_prune(model, recipe, budgets, layer_range, ratio, scores, samples, batch_size, progress, dense_stream,
                  dropped: set[int] = frozenset()) -> EngineResult:
    pruned = capture_layer_inputs(model, samples, batch_size)
    dense = None
    if recipe.refits:
        dense = CachedDenseStream(dense_stream, pruned, len(decoder_layers(model))) if dense_stream else LiveDenseStream(pruned)
    ctx = LayerContext(recipe, score_method(recipe.score).make(**recipe.options), model_head_dim(model.config), scores, dense, pruned)
    device = execution_device(model)
    plans, reports = [], []
    diverged = False  # until a layer is pruned, the pruned stream is the dense one
    desc = f"{recipe.flow} flow, {recipe.reconstruct} reconstruction"
    for index, layer in enumerate(tqdm(decoder_layers(model), desc=desc, disable=not progress)):
        geometry = layer_geometry(layer, ctx.head_dim)
        budget = budgets[index]
        with layer_on_device(layer, device):
            if index in dropped:  # a whole block a depth share removes: the dense stream passes it, the pruned skips it
                if ctx.dense is not None:
                    ctx.dense.taps(index, layer, set())
                lp, report, diverged = None, {"layer": index, "dropped": "whole block (depth_share)"}, True
            elif not diverged and budget == LayerBudget(0, 0):
                lp = select_units(torch.zeros(geometry.num_heads), torch.zeros(geometry.intermediate_size), geometry, budget, recipe.heads)
                report = {"layer": index, "kept": "dense (nothing pruned yet)"}
                if ctx.dense is not None:
                    ctx.dense.advance_shared(index, layer, ctx.pruned)
                else:
                    propagate(layer, ctx.pruned)
            elif recipe.reconstruct == "paper":
                lp, report = refitflow.pre_pruning_refit_layer(ctx, index, layer, geometry, budget)
            elif recipe.reconstruct == "obs":
                from structprune.pruning.obsflow import obs_layer

                lp, report = obs_layer(ctx, index, layer, geometry, budget)
            elif recipe.reconstruct == "refit":
                lp, report = refitflow.refit_layer(ctx, index, layer, geometry, budget)
            else:
                lp, report = sequential_layer(ctx, index, layer, geometry, budget)
            diverged = diverged or budget != LayerBudget(0, 0)
        plans.append(lp)
        reports.append(report)
        log.info("layer %d: %s", index, {k: v for k, v in report.items() if k != "layer"})
    if dropped:
        from structprune.pruning.depth import remove_blocks

        remove_blocks(model, sorted(dropped))
        plans = [lp for lp in plans if lp is not None]
        budgets = [b for i, b in enumerate(budgets) if i not in dropped]
    plan = PrunePlan(plans)
    return EngineResult(with_plan_widths(model, plan), plan, budgets, layer_range, ratio, reports)
