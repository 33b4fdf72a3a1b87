"""One layer's step of the engine's loop without a refit, and what every layer step shares.

`LayerContext` is the loop's state (the recipe, its scorer, the streams); `stream_statistics`
and `layer_scores` are how a step scores a layer: on the pruned stream's statistics in a
sequential flow, from the dense score file otherwise. The refit steps (refitflow.py) and
SlimGPT's step (obsflow.py) score through them, so a recording script can wrap one seam.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from structprune.calibration.densestream import CachedDenseStream, LiveDenseStream
from structprune.calibration.statistics import SCORED_SITES, LayerStatistics, with_placeholder_mlp_moments
from structprune.calibration.streams import LayerBatch, paired_pass, propagate
from structprune.pruning.scores import LayerWeights, UnitScores
from structprune.pruning.slicing import slice_layer
from structprune.pruning.units import LayerPlan, select_units
from structprune.spec.recipe import Recipe, StatisticsNeeds, statistics_needs


@dataclass
class LayerContext:
    recipe: Recipe
    scorer: object
    head_dim: int
    scores: dict | None
    dense: LiveDenseStream | CachedDenseStream | None  # the dense stream a refit compares with
    pruned: list[LayerBatch]



def stream_statistics(ctx: LayerContext, from_refits: frozenset = frozenset()) -> tuple[LayerStatistics, set]:
    """Accumulators for the pruned stream: what the score reads in a sequential flow (no full
    moments, attention maps or sites it does not use), else the means bias compensation needs; and
    which of `from_refits` (sites whose Gram matrix a refit accumulates anyway) the score
    needs in full, to be read from that refit (`LayerStatistics.moments(grams=...)`)."""
    needs = statistics_needs(ctx.recipe.score, ctx.recipe.options) if ctx.recipe.flow == "sequential" else StatisticsNeeds()
    shared = set(needs.full_sites) & set(from_refits)
    return LayerStatistics.for_needs(replace(needs, full_sites=frozenset(needs.full_sites - shared)), SCORED_SITES), shared


def layer_scores(ctx: LayerContext, index: int, layer: nn.Module, moments: dict | None, heads_only: bool = False) -> UnitScores:
    """Sequential flow: score on the pruned stream's statistics (`moments`); dense flow: the score
    file. `heads_only`: the layer's heads from attention statistics alone (an empty MLP is
    scored, so no neuron score is computed)."""
    if ctx.recipe.flow == "sequential":
        weights = LayerWeights.from_layer(index, layer, ctx.head_dim)
        if heads_only:
            weights = weights.without_neurons()
            moments = with_placeholder_mlp_moments(moments, weights.geometry.hidden_size, 0)
        return ctx.scorer(weights, moments)
    return UnitScores(ctx.scores[f"layers.{index}.heads"], ctx.scores[f"layers.{index}.neurons"])


def sequential_layer(ctx: LayerContext, index, layer, geometry, budget) -> tuple[LayerPlan, dict]:
    """No refit (Wanda-sp's flow, FLAP's with compensation): score on X^, slice, advance X^."""
    stats, _ = stream_statistics(ctx)
    if ctx.recipe.flow == "sequential" or ctx.recipe.reconstruct == "bias":
        paired_pass(layer, ctx.pruned, {}, lambda seen: None, [stats.attach])
    scores = layer_scores(ctx, index, layer, stats.moments() if ctx.recipe.flow == "sequential" else None)
    lp = select_units(scores.heads, scores.neurons, geometry, budget, ctx.recipe.heads)
    means = None
    if ctx.recipe.reconstruct == "bias":
        moments = stats.moments()
        means = (moments["o_proj_in.mean"], moments["down_proj_in.mean"])
    slice_layer(layer, lp, ctx.head_dim, means)
    propagate(layer, ctx.pruned)
    return lp, {"layer": index, "heads": len(lp.keep_heads), "neurons": len(lp.keep_neurons)}
