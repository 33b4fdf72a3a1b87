"""Per-layer pruning ratios searched on calibration text (ours; `allocation: searched`).

Týr-the-Pruner (2025) searches each layer's sparsity for the loss of the whole model; SlimGPT
fixes a log-increasing shape. Ours measures instead of assuming, at the cost of one probe per
layer and level, and searches exactly under an additive model of the loss:

1. levels: layer l may lose r + j * step * (B / B_l) of its block parameters, j in
   -LEVELS..LEVELS, step = r / LEVELS (r: the uniform ratio; B_l: the layer's block parameters,
   B: their mean over the pruned range), so that any choice whose offsets sum to 0 removes the
   target exactly (before the budget rule's rounding, as every allocation);
2. probe (`layer_costs`): on the first `SEARCH_WINDOWS` calibration windows of the dense model,
   each pruned layer alone is cut at each level with the recipe's score and budget rule (no
   reconstruction) and the rest of the model run to the head: the rise of the mean next-token
   loss over the dense model's is that level's cost;
3. search (`searched_offsets`): the offsets of least total cost whose sum is 0, exactly, by
   dynamic programming over the layers (a multiple-choice knapsack; ties go to the offset
   nearest the uniform ratio). A higher level removes a superset of a lower one's units (the
   same scores), so its cost is taken as at least theirs (`monotone_costs`): a dip in a
   probe's loss is the calibration windows' noise, not a gain the search should chase.

Interactions between layers and the reconstruction's repair are outside the additive model;
the select stage judges the schedule against uniform, increasing and global on held-out text.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import nn
from tqdm.auto import tqdm

from structprune.calibration.streams import LayerBatch, paired_pass
from structprune.model.geometry import LayerGeometry, decoder_layers, layer_geometry, model_head_dim
from structprune.pruning.allocation import BUDGET_RULES
from structprune.pruning.layerstep import LayerContext, layer_scores, stream_statistics
from structprune.pruning.scores import score_method
from structprune.pruning.slicing import slice_layer
from structprune.pruning.units import LayerBudget, select_units
from structprune.spec.layerratios import MAX_LAYER_RATIO

log = logging.getLogger(__name__)

LEVELS = 3  # levels each side of the uniform ratio: 0, r/3, ..., r, ..., 2r (7 per layer)
SEARCH_WINDOWS = 16  # calibration windows the probes read (the paper's score calibration size)


def level_ratios(geometries: list[LayerGeometry], ratio: float, layer_range: tuple[int, int],
                 levels: int = LEVELS) -> list[list[float]]:
    """Per pruned layer, its ratio at each offset -levels..levels (module docstring, step 1)."""
    start, end = layer_range
    sizes = [g.block_params for g in geometries[start:end]]
    mean, step = sum(sizes) / len(sizes), ratio / levels
    return [[ratio + j * step * mean / size for j in range(-levels, levels + 1)] for size in sizes]


def searched_offsets(costs: torch.Tensor) -> list[int]:
    """The offsets (one per row of `costs`, [layers, 2 * levels + 1], inf where a level cannot
    run) whose sum is 0 and whose summed cost is least; ties keep the offset nearest 0."""
    levels = (costs.shape[1] - 1) // 2
    best = {0: (0.0, 0, [])}  # partial sum of offsets -> (cost, sum of |offset|, offsets so far)
    for row in costs.tolist():
        nxt: dict[int, tuple[float, int, list[int]]] = {}
        for total, (cost, spread, chosen) in best.items():
            for j in range(-levels, levels + 1):
                candidate = (cost + row[j + levels], spread + abs(j), chosen + [j])
                if math.isfinite(candidate[0]) and (total + j not in nxt or candidate[:2] < nxt[total + j][:2]):
                    nxt[total + j] = candidate
        best = nxt
    if 0 not in best:
        raise ValueError("no per-layer ratios reach the target: the uniform ratio itself cannot run (lower the sparsity)")
    return best[0][2]


def monotone_costs(costs: torch.Tensor) -> torch.Tensor:
    """Each level's cost raised to the highest cost of the levels below it (inf stays inf)."""
    return costs.cummax(dim=1).values


def _probe_budget(recipe, geometry: LayerGeometry, ratio: float) -> LayerBudget | None:
    """The budget rule's budget at `ratio`, or None where that ratio cannot run."""
    if ratio <= 0:
        return LayerBudget(0, 0) if ratio > -1e-12 else None
    if ratio >= MAX_LAYER_RATIO:
        return None
    try:
        return BUDGET_RULES[recipe.budget](geometry, ratio, recipe.heads)
    except ValueError:  # e.g. mlp_only past the MLP's width
        return None


@torch.no_grad()
def layer_costs(model: nn.Module, recipe, ratios: list[list[float]], layer_range: tuple[int, int],
                samples: torch.Tensor, batch_size: int, scores: dict | None = None,
                progress: bool = True) -> tuple[torch.Tensor, float]:
    """Step 2 of the module docstring: [pruned layers, levels] loss rises (inf where a level
    cannot run) and the dense model's calibration loss."""
    from structprune.calibration.streams import capture_layer_inputs
    from structprune.pruning.depth import calibration_labels, entering_states, loss_from

    layers = decoder_layers(model)
    batches = capture_layer_inputs(model, samples[:SEARCH_WINDOWS], batch_size)
    labels = calibration_labels(samples[:SEARCH_WINDOWS], batch_size, batches[0].hidden.device)
    entering = entering_states(layers, batches, set())
    dense_loss = loss_from(model, len(layers), entering[len(layers)], batches, labels, set())  # the head alone
    head_dim = model_head_dim(model.config)
    scorer = score_method(recipe.score).make(**recipe.options)
    start, end = layer_range
    costs = torch.full((end - start, len(ratios[0])), math.inf, dtype=torch.float64)
    for row, index in enumerate(tqdm(range(start, end), desc="probing layer ratios", disable=not progress)):
        layer = layers[index]
        geometry = layer_geometry(layer, head_dim)
        here = [LayerBatch(h, b.layer_kwargs) for h, b in zip(entering[index], batches, strict=True)]
        ctx = LayerContext(recipe, scorer, head_dim, scores, None, here)
        stats, _ = stream_statistics(ctx)
        if recipe.flow == "sequential":
            paired_pass(layer, here, {}, lambda seen: None, [stats.attach])
        unit_scores = layer_scores(ctx, index, layer, stats.moments() if recipe.flow == "sequential" else None)
        for column, ratio in enumerate(ratios[row]):
            budget = _probe_budget(recipe, geometry, ratio)
            if budget == LayerBudget(0, 0):
                costs[row, column] = 0.0
            elif budget is not None:
                probe = copy.deepcopy(layer)
                slice_layer(probe, select_units(unit_scores.heads, unit_scores.neurons, geometry, budget, recipe.heads), head_dim)
                layers[index] = probe
                try:
                    costs[row, column] = loss_from(model, index, entering[index], batches, labels, set()) - dense_loss
                finally:
                    layers[index] = layer
        log.info("layer %d: loss rise per level %s", index, [round(c, 4) for c in costs[row].tolist()])
    return costs, dense_loss


def searched_ratios(model: nn.Module, recipe, geometries: list[LayerGeometry], ratio: float,
                    layer_range: tuple[int, int], samples: torch.Tensor, batch_size: int,
                    scores: dict | None = None) -> tuple[list[float], dict]:
    """Each pruned layer's searched ratio, and a report of the search (levels, costs, choice)."""
    ratios = level_ratios(geometries, ratio, layer_range)
    costs, dense_loss = layer_costs(model, recipe, ratios, layer_range, samples, batch_size, scores)
    offsets = searched_offsets(monotone_costs(costs))
    chosen = [row[j + LEVELS] for row, j in zip(ratios, offsets, strict=True)]
    report = {"strategy": "searched", "levels": LEVELS, "windows": int(min(SEARCH_WINDOWS, samples.shape[0])),
              "dense_loss": dense_loss, "offsets": offsets, "ratios": chosen,
              "predicted_loss_rise": float(sum(monotone_costs(costs)[i, j + LEVELS] for i, j in enumerate(offsets))),
              "costs": [[c if math.isfinite(c) else None for c in row] for row in costs.tolist()]}
    log.info("searched layer ratios (uniform %.4f): %s", ratio, [round(r, 4) for r in chosen])
    return chosen, report
