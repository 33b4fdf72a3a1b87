"""The engine's refit steps: one layer pruned, then its maps refitted toward the dense stream.

`refit_layer` (ours, `reconstruct: refit`): score, cut, refit o_proj and down_proj after the
cut. `pre_pruning_refit_layer` (the paper's Algorithms 1, 3, 4, `reconstruct: paper`): refit
every map of a module before scoring and cutting it. Both run only the halves of the layer
each refit needs (their docstrings) and score through layerstep.py's seams.
"""

from __future__ import annotations

import torch
from torch import nn

from structprune.calibration.densestream import FIRST_LEVEL
from structprune.calibration.statistics import LayerStatistics, restrict_to_heads
from structprune.calibration.streams import LayerBatch, paired_pass, tapped
from structprune.model.blocks import (
    attention_update,
    block_target,
    mlp_norm,
    mlp_norm_path,
    mlp_update,
    residual_norm_path,
)
from structprune.pruning import layerstep
from structprune.pruning.reconstruction import LinearRefit, refit_linear, refit_shared_input
from structprune.pruning.slicing import prune_attention, prune_mlp, unit_channels
from structprune.pruning.units import LayerPlan, select_heads, select_neurons, select_units


def _pairs(layer, module: str, target: str) -> tuple[dict, callable]:
    """Taps and a pair builder for refitting `module` toward the dense module output, or
    (target "block", pre-norm blocks only: model/blocks.py) the dense output plus the gap
    between the dense and pruned residual streams it is added to, so the residual stream after
    it matches the dense model's."""
    taps = {"x": ("pruned", module, "in"), "y": ("dense", module, "out")}
    if target == "block":
        residual = residual_norm_path(layer, module)
        taps |= {"dense_res": ("dense", residual, "in"), "pruned_res": ("pruned", residual, "in")}

    def pair(seen):
        y = block_target(layer, seen["y"], seen["dense_res"], seen["pruned_res"]) if target == "block" else seen["y"]
        return seen["x"], y

    return taps, pair


def _dense_sites(layer, modules: list[str], target: str) -> set[tuple[str, str]]:
    """The dense tensors the refits of `modules` toward `target` read (see `_pairs`)."""
    sites = {(module, "out") for module in modules}
    if target == "block":
        sites |= {(residual_norm_path(layer, module), "in") for module in modules}
    return sites


def _collect(ctx, layer, module: str, target: str, dense_taps: list[dict], extra_hooks=(),
             keep: list | None = None) -> LinearRefit:
    """The normal equations of refitting `module`; with `keep`, each batch's pruned input of
    `module` and the residual stream it is added to are appended to it."""
    taps, pair = _pairs(layer, module, target)
    if keep is not None:
        taps["residual"] = ("pruned", residual_norm_path(layer, module), "in")
    refit = LinearRefit()

    def consume(seen):
        refit.add(*pair(seen))
        if keep is not None:
            keep.append((seen["x"], seen["residual"]))

    paired_pass(layer, ctx.pruned, taps, consume, extra_hooks, dense_taps)
    return refit


def refit_layer(ctx, index, layer, geometry, budget) -> tuple[LayerPlan, dict]:
    """Ours: score (sequential: on X^), slice, then refit o_proj and down_proj after the cut.

    Two layer passes and one MLP pass instead of six layer passes (one, with a cached dense
    stream): the dense layer runs once, or is read (its outputs serve both refits, and the
    dense stream advances); the pruned layer
    once (statistics and the o_proj system; o_proj's inputs z are kept with the residual);
    after the cut and the o_proj refit the stream after the attention is residual +
    o_proj(z of the kept heads), so only the MLP half runs again (the down_proj system); the
    pruned stream then advances as that + down_proj(h), the layer's own last step."""
    recipe = ctx.recipe
    # the layer is not yet changed: its dense taps are taken before anything is cut or refitted
    dense_taps = ctx.dense.taps(index, layer, _dense_sites(layer, ["self_attn.o_proj", "mlp.down_proj"], recipe.target))
    (stats, _), kept = layerstep.stream_statistics(ctx), []
    o_refit = _collect(ctx, layer, "self_attn.o_proj", recipe.target, dense_taps, [stats.attach], keep=kept)
    scores = layerstep.layer_scores(ctx, index, layer, stats.moments() if ctx.recipe.flow == "sequential" else None)
    lp = select_units(scores.heads, scores.neurons, geometry, budget, recipe.heads)
    prune_attention(layer, lp.keep_heads, lp.keep_kv_heads, ctx.head_dim)
    prune_mlp(layer, lp.keep_neurons)
    channels = unit_channels(lp.keep_heads, ctx.head_dim)
    report = {"layer": index, "heads": len(lp.keep_heads), "neurons": len(lp.keep_neurons)}
    report["o_proj"] = refit_linear(layer.self_attn.o_proj, o_refit.restricted(channels), recipe.damp)
    with torch.no_grad():
        mids = [residual + attention_update(layer, layer.self_attn.o_proj(z[..., channels])) for z, residual in kept]
    del kept
    d_refit, hs = _mlp_pass(layer, mids, dense_taps, None, recipe.target)
    report["down_proj"] = refit_linear(layer.mlp.down_proj, d_refit, recipe.damp)
    with torch.no_grad():
        for batch, mid, h in zip(ctx.pruned, mids, hs, strict=True):
            batch.hidden = mid + mlp_update(layer, layer.mlp.down_proj(h))
    return lp, report


def first_level_norm_path(layer, sublayer: str) -> str:
    """The norm whose output the first level of `sublayer` ("self_attn" or "mlp") reads."""
    return "input_layernorm" if sublayer == "self_attn" else mlp_norm_path(layer)


def refit_first_level(layer, names: list[str], inputs: list[torch.Tensor], damp: float,
                       dense_taps: list[dict]) -> tuple[dict, LinearRefit]:
    """Refit the linear maps `names` that read one input (q, k, v; gate, up) from the pruned
    stream's input of them (`inputs`, one tensor per batch) to the dense layer's outputs of the
    same maps (the module's first level); no layer pass is needed.

    A map's weight is fitted to W X (W: the maps' dense weights, stacked; X: the dense
    stream's norm output), its dense output less its bias, which stays: so Y X^^T =
    W (X X^^T), an (in x in) cross product instead of the (out x in) one (about five times
    less work for gate and up together). The dense side is read as the norm output and each
    map's output energy ||W x||^2 per channel (`densestream.output_energy`, for the error
    report), never the maps' outputs themselves. Returns the errors and the normal equations
    (their X^X^^T is the input's Gram matrix, which the statistics of the same input reuse)."""
    linears = [layer.get_submodule(n) for n in names]
    norm = first_level_norm_path(layer, names[0].split(".")[0])
    sums, yy = LinearRefit(), 0.0
    for x, taps in zip(inputs, dense_taps, strict=True):
        sums.add(x, taps[(norm, "out")])  # X^X^^T and X X^^T
        yy = yy + torch.cat([taps[(n, "energy")] for n in names])
    weight = torch.cat([linear.weight.detach().to(sums.xx.device, torch.float64) for linear in linears])
    sums = LinearRefit(sums.xx, weight @ sums.yx, yy, sums.count, sums.product_dtype)
    errors = refit_shared_input(linears, sums, damp)
    return {n.rsplit('.', 1)[1]: e for n, e in zip(names, errors)}, sums


def _attention_pass(layer, batches: list[LayerBatch], dense_taps: list[dict], stats: LayerStatistics) -> tuple[LinearRefit, list]:
    """Run only the attention half of `layer` on the pruned stream (statistics hooks on): the
    normal equations of refitting o_proj to the dense module output, and per batch the heads'
    output z (o_proj's input) with the residual stream it is added to. The MLP half, three
    quarters of a layer's work, is not run: its input depends on the o_proj refit; nor is
    o_proj, whose weights change next (an identity stands in for it during the pass)."""
    refit, kept = LinearRefit(), []
    attn = layer.self_attn
    o_proj, attn.o_proj, handles = attn.o_proj, nn.Identity(), []
    try:
        handles = stats.attach(layer)
        with tapped({"z": (attn.o_proj, "in")}) as seen, torch.no_grad():
            for batch, taps in zip(batches, dense_taps, strict=True):
                attn(hidden_states=layer.input_layernorm(batch.hidden), **batch.kwargs_for(layer))
                refit.add(seen["z"], taps[("self_attn.o_proj", "out")])
                kept.append((seen["z"], batch.hidden))
    finally:
        for handle in handles:
            handle.remove()
        attn.o_proj = o_proj
    return refit, kept


def mlp_hidden(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """h = act(gate x) * (up x): the gated MLP's down_proj input, without down_proj itself."""
    return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)


def _mlp_pass(layer, mids: list[torch.Tensor], dense_taps: list[dict], stats: LayerStatistics | None,
              target: str = "module", normed: list[torch.Tensor] | None = None) -> tuple[LinearRefit, list]:
    """The MLP half of `layer` on the residual streams `mids` (their post-attention norm
    outputs: `normed`, if already computed) up to down_proj's input h (statistics added, if
    given): the normal equations of refitting down_proj toward `target` (see `_pairs`: the
    dense module output, or for "block" that plus the dense minus the pruned residual), and
    the h per batch. down_proj itself is not run: its weights change next."""
    refit, inputs = LinearRefit(), []
    with torch.no_grad():
        for i, (mid, taps) in enumerate(zip(mids, dense_taps, strict=True)):
            x = normed[i] if normed is not None else mlp_norm(layer)(mid)
            h = mlp_hidden(layer.mlp, x)
            if stats is not None:
                stats.add_mlp(x, h)
            y = taps[("mlp.down_proj", "out")]
            if target == "block":
                y = block_target(layer, y, taps[(residual_norm_path(layer, "mlp.down_proj"), "in")], mid)
            refit.add(h, y)
            inputs.append(h)
    return refit, inputs


def pre_pruning_refit_layer(ctx, index, layer, geometry, budget) -> tuple[LayerPlan, dict]:
    """Algorithms 1, 3, 4: per module (attention, then MLP), refit the first level to the dense
    first-level outputs, then the second level to the dense module output on the input the
    refitted first level produces; score on the updated statistics; prune (no refit after).

    One dense layer pass, one pruned attention pass and one pruned MLP pass instead of six
    layer passes, the same arithmetic: the dense layer runs once, or is read from the cache (its taps serve all seven
    refits); the first levels read the input norms directly; the attention half alone, with
    the refitted q, k, v, gives o_proj's inputs z, which are kept, so the stream after the
    pruned attention is residual + o_proj(z of the kept heads) (a kept head's z does not
    depend on the removed ones) and only the MLP half runs next; the stream then advances as
    that + down_proj(h of the kept neurons), the layer's own last step."""
    recipe = ctx.recipe
    first = list(FIRST_LEVEL)
    # the layer is not yet changed: the dense side is taken before anything is refitted
    sites = (_dense_sites(layer, ["self_attn.o_proj", "mlp.down_proj"], "module")
             | {(first_level_norm_path(layer, sublayer), "out") for sublayer in ("self_attn", "mlp")}
             | {(n, "energy") for n in first})
    dense_taps = ctx.dense.taps(index, layer, sites)
    report: dict = {"layer": index}
    # attention: q, k, v from X^; o on the refitted heads' output z (kept with the residual)
    with torch.no_grad():
        normed = [layer.input_layernorm(batch.hidden) for batch in ctx.pruned]
    report |= refit_first_level(layer, first[:3], normed, recipe.damp, dense_taps)[0]
    del normed
    attn_stats, o_gram = layerstep.stream_statistics(ctx, frozenset({"o_proj_in"}))
    o_refit, kept = _attention_pass(layer, ctx.pruned, dense_taps, attn_stats)
    report["o_proj"] = refit_linear(layer.self_attn.o_proj, o_refit, recipe.damp)
    attn_moments = attn_stats.moments(grams={site: (o_refit.xx, o_refit.count) for site in o_gram})
    head_scores = layerstep.layer_scores(ctx, index, layer, attn_moments, heads_only=True).heads
    keep_heads, keep_kv = select_heads(head_scores, geometry, budget.heads, recipe.heads)
    prune_attention(layer, keep_heads, keep_kv, ctx.head_dim)
    channels = unit_channels(keep_heads, ctx.head_dim)
    with torch.no_grad():
        mids = [residual + attention_update(layer, layer.self_attn.o_proj(z[..., channels])) for z, residual in kept]
        del kept
        normed = [mlp_norm(layer)(m) for m in mids]
    # MLP: gate, up from the pruned attention's stream; down on the refitted neurons' output
    first_report, mlp_in = refit_first_level(layer, first[3:], normed, recipe.damp, dense_taps)
    report |= first_report
    mlp_stats, mlp_gram = layerstep.stream_statistics(ctx, frozenset({"mlp_in"}))
    d_refit, hs = _mlp_pass(layer, mids, dense_taps, mlp_stats, normed=normed)
    del normed
    report["down_proj"] = refit_linear(layer.mlp.down_proj, d_refit, recipe.damp)
    mlp_moments = mlp_stats.moments(grams={site: (mlp_in.xx, mlp_in.count) for site in mlp_gram})
    moments = {**restrict_to_heads(attn_moments, keep_heads, ctx.head_dim), **mlp_moments}
    lp = LayerPlan(keep_heads, keep_kv, select_neurons(layerstep.layer_scores(ctx, index, layer, moments).neurons, geometry, budget.neurons))
    prune_mlp(layer, lp.keep_neurons)
    report |= {"heads": len(keep_heads), "neurons": len(lp.keep_neurons)}
    neurons = torch.tensor(lp.keep_neurons, dtype=torch.long)
    with torch.no_grad():
        for batch, mid, h in zip(ctx.pruned, mids, hs, strict=True):
            batch.hidden = mid + mlp_update(layer, layer.mlp.down_proj(h[..., neurons]))
    return lp, report
