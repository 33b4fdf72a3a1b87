"""One layer of the engine's loop with SlimGPT's reconstruction (`reconstruct: obs`).

The pruned stream runs once through the unchanged layer; the Gram matrices of o_proj's and
down_proj's inputs are kept (SlimGPT's reference drivers collect both Hessians in that one
pass, then prune the attention and the MLP). The units go by SlimGPT's own greedy OBS loop
(`score: obs`, pruning/obs.py) or by any other score on the stream's statistics; either way
the kept o_proj and down_proj columns get the OBS compensation of everything removed, the
layer is sliced, and the stream advances through the pruned layer (the next layer's input).
"""

from __future__ import annotations

import torch

from structprune.calibration.streams import paired_pass, propagate
from structprune.pruning import layerstep
from structprune.pruning.obs import PERCDAMP, compensated, greedy_columns, hessian, obs_heads
from structprune.pruning.reconstruction import add_gram
from structprune.pruning.scores import LayerWeights
from structprune.pruning.slicing import prune_attention, prune_mlp, unit_channels
from structprune.pruning.units import LayerPlan, select_units


def obs_layer(ctx, index: int, layer, geometry, budget) -> tuple[LayerPlan, dict]:
    """Select (SlimGPT's loop, or the recipe's score), compensate, slice, advance the stream."""
    recipe = ctx.recipe
    stats, _ = layerstep.stream_statistics(ctx)
    grams: dict[str, torch.Tensor | None] = {"z": None, "h": None}
    count = [0]

    def consume(seen):
        grams["z"] = add_gram(grams["z"], seen["z"])
        grams["h"] = add_gram(grams["h"], seen["h"])
        count[0] += seen["z"].reshape(-1, seen["z"].shape[-1]).shape[0]

    taps = {"z": ("pruned", "self_attn.o_proj", "in"), "h": ("pruned", "mlp.down_proj", "in")}
    paired_pass(layer, ctx.pruned, taps, consume, [stats.attach] if recipe.score != "obs" else [])
    percdamp = float(recipe.options.get("percdamp", PERCDAMP)) if recipe.score == "obs" else PERCDAMP
    h_attn, h_mlp = hessian(grams["z"], count[0], percdamp), hessian(grams["h"], count[0], percdamp)
    o_proj, down_proj = layer.self_attn.o_proj, layer.mlp.down_proj
    if recipe.score == "obs" and not recipe.options.get("greedy", True):  # ranked once by the first-step errors
        moments = {"o_proj_in.second_moment": grams["z"] / count[0], "down_proj_in.second_moment": grams["h"] / count[0]}
        scores = ctx.scorer(LayerWeights.from_layer(index, layer, ctx.head_dim), moments)
        lp = select_units(scores.heads, scores.neurons, geometry, budget, recipe.heads)
    elif recipe.score == "obs":
        keep_heads, keep_kv = obs_heads(o_proj.weight.detach(), h_attn, geometry, budget.heads, recipe.heads)
        removed = set(greedy_columns(down_proj.weight.detach(), h_mlp, min(budget.neurons, geometry.intermediate_size - 1)))
        lp = LayerPlan(keep_heads, keep_kv, [n for n in range(geometry.intermediate_size) if n not in removed])
    else:
        scores = layerstep.layer_scores(ctx, index, layer, stats.moments() if recipe.flow == "sequential" else None)
        lp = select_units(scores.heads, scores.neurons, geometry, budget, recipe.heads)
    channels = unit_channels(lp.keep_heads, ctx.head_dim)
    neurons = torch.tensor(lp.keep_neurons, dtype=torch.long)
    new_o = compensated(o_proj.weight.detach(), h_attn, channels) if len(channels) else None
    new_down = compensated(down_proj.weight.detach(), h_mlp, neurons)
    prune_attention(layer, lp.keep_heads, lp.keep_kv_heads, ctx.head_dim)
    prune_mlp(layer, lp.keep_neurons)
    with torch.no_grad():
        if new_o is not None:
            layer.self_attn.o_proj.weight.copy_(new_o.to(layer.self_attn.o_proj.weight.dtype))
        layer.mlp.down_proj.weight.copy_(new_down.to(layer.mlp.down_proj.weight.dtype))
    propagate(layer, ctx.pruned)
    return lp, {"layer": index, "heads": len(lp.keep_heads), "neurons": len(lp.keep_neurons), "obs_percdamp": percdamp}
