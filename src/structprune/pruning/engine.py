"""The one layer-wise loop every pruning run goes through.

A `Recipe` (recipe.py) picks a score, a unit, an allocation, a flow and a reconstruction;
`prune_with_recipe` carries it out:

1. allocation: how many units each layer loses (`allocation.py`; the global allocation reads
   the dense model's scores);
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

from structprune.calibration.densestream import FIRST_LEVEL, CachedDenseStream, LiveDenseStream
from structprune.calibration.statistics import (
    SCORED_SITES,
    LayerStatistics,
    restrict_to_heads,
    with_placeholder_mlp_moments,
)
from structprune.calibration.streams import LayerBatch, capture_layer_inputs, paired_pass, propagate, tapped
from structprune.model.blocks import (
    attention_update,
    block_target,
    mlp_norm,
    mlp_norm_path,
    mlp_update,
    residual_norm_path,
)
from structprune.model.device import execution_device, layer_on_device
from structprune.model.geometry import (
    count_parameters,
    decoder_layers,
    layer_geometry,
    model_geometries,
    model_head_dim,
)
from structprune.pruning.allocation import (
    global_budgets,
    increasing_budgets,
    layer_ratio,
    resolve_layer_range,
    round_kept_neurons,
    uniform_budgets,
)
from structprune.pruning.planning import check_scores, plan_from_budgets
from structprune.pruning.reconstruction import LinearRefit, refit_linear, refit_shared_input
from structprune.pruning.scores import LayerWeights, UnitScores, score_method
from structprune.pruning.slicing import (
    prune_attention,
    prune_mlp,
    prune_model,
    slice_layer,
    unit_channels,
    with_plan_widths,
)
from structprune.pruning.units import LayerBudget, LayerPlan, PrunePlan, select_heads, select_neurons, select_units
from structprune.spec.recipe import Recipe, StatisticsNeeds, recipe_problems, statistics_needs

log = logging.getLogger(__name__)

@dataclass
class EngineResult:
    model: nn.Module
    plan: PrunePlan
    budgets: list[LayerBudget]
    layer_range: tuple[int, int]
    ratio: float  # fraction of each pruned layer's block parameters the allocation targets
    reports: list[dict] = field(default_factory=list)  # per layer: reconstruction errors


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


def allocate(recipe: Recipe, model: nn.Module, sparsity: float, scores) -> tuple[list[LayerBudget], tuple[int, int], float]:
    geometries = model_geometries(model)
    layer_range = resolve_layer_range(recipe.layers, len(geometries))
    total = count_parameters(model)["total"]
    ratio = layer_ratio(geometries, sparsity, layer_range, recipe.sparsity_of, total)
    if recipe.allocation == "global":
        check_scores(scores, geometries)
        budgets = global_budgets(scores, geometries, ratio, layer_range, recipe.heads, recipe.budget)
    elif recipe.allocation == "increasing":
        budgets = increasing_budgets(geometries, ratio, layer_range, recipe.heads, recipe.budget)
    else:
        budgets = uniform_budgets(geometries, ratio, layer_range, recipe.heads, recipe.budget)
    return round_kept_neurons(budgets, geometries, recipe.round_to), layer_range, ratio


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
    budgets, layer_range, ratio = allocate(recipe, model, sparsity, scores)
    if not recipe.needs_samples:
        plan = plan_from_budgets(scores, model_geometries(model), budgets, recipe.heads)
        means = stats if recipe.reconstruct == "bias" else None
        return EngineResult(prune_model(model, plan, means), plan, budgets, layer_range, ratio)
    return _stream_prune(model, recipe, budgets, layer_range, ratio, scores, samples, batch_size, progress, dense_stream)


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

@dataclass
class _Context:
    recipe: Recipe
    scorer: object
    head_dim: int
    scores: dict | None
    dense: LiveDenseStream | CachedDenseStream | None  # the dense stream a refit compares with
    pruned: list[LayerBatch]


def _stream_prune(model, recipe, budgets, layer_range, ratio, scores, samples, batch_size, progress, dense_stream) -> EngineResult:
    pruned = capture_layer_inputs(model, samples, batch_size)
    dense = None
    if recipe.refits:
        dense = CachedDenseStream(dense_stream, pruned, len(decoder_layers(model))) if dense_stream else LiveDenseStream(pruned)
    ctx = _Context(recipe, score_method(recipe.score).make(**recipe.options), model_head_dim(model.config), scores, dense, pruned)
    device = execution_device(model)
    plans, reports = [], []
    diverged = False  # until a layer is pruned, the pruned stream is the dense one
    desc = f"{recipe.flow} flow, {recipe.reconstruct} reconstruction"
    for index, layer in enumerate(tqdm(decoder_layers(model), desc=desc, disable=not progress)):
        geometry = layer_geometry(layer, ctx.head_dim)
        budget = budgets[index]
        with layer_on_device(layer, device):
            if not diverged and budget == LayerBudget(0, 0):
                lp = select_units(torch.zeros(geometry.num_heads), torch.zeros(geometry.intermediate_size), geometry, budget, recipe.heads)
                report = {"layer": index, "kept": "dense (nothing pruned yet)"}
                if ctx.dense is not None:
                    ctx.dense.advance_shared(index, layer, ctx.pruned)
                else:
                    propagate(layer, ctx.pruned)
            elif recipe.reconstruct == "paper":
                lp, report = _pre_pruning_refit_layer(ctx, index, layer, geometry, budget)
            elif recipe.reconstruct == "obs":
                from structprune.pruning.obsflow import obs_layer

                lp, report = obs_layer(ctx, index, layer, geometry, budget, _stream_statistics, _layer_scores)
            elif recipe.reconstruct == "refit":
                lp, report = _refit_layer(ctx, index, layer, geometry, budget)
            else:
                lp, report = _sequential_layer(ctx, index, layer, geometry, budget)
            diverged = diverged or budget != LayerBudget(0, 0)
        plans.append(lp)
        reports.append(report)
        log.info("layer %d: %s", index, {k: v for k, v in report.items() if k != "layer"})
    plan = PrunePlan(plans)
    return EngineResult(with_plan_widths(model, plan), plan, budgets, layer_range, ratio, reports)


def _stream_statistics(ctx: _Context, from_refits: frozenset = frozenset()) -> tuple[LayerStatistics, set]:
    """Accumulators for the pruned stream: what the score reads in a sequential flow (no full
    moments, attention maps or sites it does not use), else the means bias compensation needs; and
    which of `from_refits` (sites whose Gram matrix a refit accumulates anyway) the score
    needs in full, to be read from that refit (`LayerStatistics.moments(grams=...)`)."""
    needs = statistics_needs(ctx.recipe.score, ctx.recipe.options) if ctx.recipe.flow == "sequential" else StatisticsNeeds()
    shared = set(needs.full_sites) & set(from_refits)
    return LayerStatistics.for_needs(replace(needs, full_sites=frozenset(needs.full_sites - shared)), SCORED_SITES), shared


def _layer_scores(ctx: _Context, index: int, layer: nn.Module, moments: dict | None, heads_only: bool = False) -> UnitScores:
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


def _sequential_layer(ctx, index, layer, geometry, budget) -> tuple[LayerPlan, dict]:
    """No refit (Wanda-sp's flow, FLAP's with compensation): score on X^, slice, advance X^."""
    stats, _ = _stream_statistics(ctx)
    if ctx.recipe.flow == "sequential" or ctx.recipe.reconstruct == "bias":
        paired_pass(layer, ctx.pruned, {}, lambda seen: None, [stats.attach])
    scores = _layer_scores(ctx, index, layer, stats.moments() if ctx.recipe.flow == "sequential" else None)
    lp = select_units(scores.heads, scores.neurons, geometry, budget, ctx.recipe.heads)
    means = None
    if ctx.recipe.reconstruct == "bias":
        moments = stats.moments()
        means = (moments["o_proj_in.mean"], moments["down_proj_in.mean"])
    slice_layer(layer, lp, ctx.head_dim, means)
    propagate(layer, ctx.pruned)
    return lp, {"layer": index, "heads": len(lp.keep_heads), "neurons": len(lp.keep_neurons)}


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


def _refit_layer(ctx, index, layer, geometry, budget) -> tuple[LayerPlan, dict]:
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
    (stats, _), kept = _stream_statistics(ctx), []
    o_refit = _collect(ctx, layer, "self_attn.o_proj", recipe.target, dense_taps, [stats.attach], keep=kept)
    scores = _layer_scores(ctx, index, layer, stats.moments() if ctx.recipe.flow == "sequential" else None)
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


def _refit_first_level(layer, names: list[str], inputs: list[torch.Tensor], damp: float,
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


def _pre_pruning_refit_layer(ctx, index, layer, geometry, budget) -> tuple[LayerPlan, dict]:
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
    report |= _refit_first_level(layer, first[:3], normed, recipe.damp, dense_taps)[0]
    del normed
    attn_stats, o_gram = _stream_statistics(ctx, frozenset({"o_proj_in"}))
    o_refit, kept = _attention_pass(layer, ctx.pruned, dense_taps, attn_stats)
    report["o_proj"] = refit_linear(layer.self_attn.o_proj, o_refit, recipe.damp)
    attn_moments = attn_stats.moments(grams={site: (o_refit.xx, o_refit.count) for site in o_gram})
    head_scores = _layer_scores(ctx, index, layer, attn_moments, heads_only=True).heads
    keep_heads, keep_kv = select_heads(head_scores, geometry, budget.heads, recipe.heads)
    prune_attention(layer, keep_heads, keep_kv, ctx.head_dim)
    channels = unit_channels(keep_heads, ctx.head_dim)
    with torch.no_grad():
        mids = [residual + attention_update(layer, layer.self_attn.o_proj(z[..., channels])) for z, residual in kept]
        del kept
        normed = [mlp_norm(layer)(m) for m in mids]
    # MLP: gate, up from the pruned attention's stream; down on the refitted neurons' output
    first_report, mlp_in = _refit_first_level(layer, first[3:], normed, recipe.damp, dense_taps)
    report |= first_report
    mlp_stats, mlp_gram = _stream_statistics(ctx, frozenset({"mlp_in"}))
    d_refit, hs = _mlp_pass(layer, mids, dense_taps, mlp_stats, normed=normed)
    del normed
    report["down_proj"] = refit_linear(layer.mlp.down_proj, d_refit, recipe.damp)
    mlp_moments = mlp_stats.moments(grams={site: (mlp_in.xx, mlp_in.count) for site in mlp_gram})
    moments = {**restrict_to_heads(attn_moments, keep_heads, ctx.head_dim), **mlp_moments}
    lp = LayerPlan(keep_heads, keep_kv, select_neurons(_layer_scores(ctx, index, layer, moments).neurons, geometry, budget.neurons))
    prune_mlp(layer, lp.keep_neurons)
    report |= {"heads": len(keep_heads), "neurons": len(lp.keep_neurons)}
    neurons = torch.tensor(lp.keep_neurons, dtype=torch.long)
    with torch.no_grad():
        for batch, mid, h in zip(ctx.pruned, mids, hs, strict=True):
            batch.hidden = mid + mlp_update(layer, layer.mlp.down_proj(h[..., neurons]))
    return lp, report
