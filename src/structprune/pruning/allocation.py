"""How many units each layer loses: the allocation strategies.

Sparsity is a fraction of *decoder-block* parameters (q/k/v/o + gate/up/down) by default
(``sparsity_of="blocks"``), or of all parameters (``"total"``, the paper's Table 1 and
LLM-Pruner's convention). Only the blocks in ``layers = [start, end)`` are pruned (the
paper's protocol, after LLM-Pruner: every method spares the first 4 and the last 2 blocks of
LLaMA-7B); inside them the ratio rises so the model still loses the target.

Strategies (`ALLOCATIONS`):

- ``uniform``: every pruned layer loses the same ratio. ``budget="matched"`` (ours): heads
  go at the ratio rounded to what grouped-query attention allows, then MLP neurons take the
  remainder, so each layer loses the target fraction to within one neuron.
  ``budget="per_module"`` (LLM-Pruner's ``hf_prune.py`` / ``llama3.py``): attention and MLP
  each lose the ratio of their own channels, rounded down to whole units, independently.
  ``budget="mlp_only"`` (ours): attention stays whole and MLP neurons carry the layer's whole
  target (grouped-query attention leaves few, coarse head units in small models: SmolLM2's
  3 kv groups of 3 heads, where one head per group is a third of the attention).
- ``increasing``: SlimGPT's incremental pruning ratio (Ling et al. 2024; its released
  ``model_slimming.py`` ``log_increase``): the ratio of the k-th pruned layer is
  min + (max - min) ln(1 + k) / ln(N) over the N pruned layers, with min = max / 4 (the
  reference's README run for 20 %: 0.0625 / 0.25) and max set so the layers lose the target
  on average (`increasing_ratios`); each layer's ratio then goes through the budget rule.
  The reference divides by ln 32 whatever the depth (its LLaMA-7B); ln(N) gives the same shape
  on any depth (ours), and the reference sets min and max by hand where we solve for the target.
- ``global``: FLAP's adaptive structure (AL-AM): one threshold over the standardised scores
  of every unit in the pruned layers (`global_budgets`). With ``budget="mlp_only"`` (ours)
  the threshold runs over MLP neurons alone and attention stays whole.

- ``searched`` (ours): per-layer ratios searched on calibration text (`layersearch.py`): each
  pruned layer probed alone at seven ratios around the uniform one, the least summed loss rise
  that removes the target; each layer's ratio then goes through the budget rule.

After any, `round_kept_neurons` (ours, ``round_to``; Torch-Pruning's option of that name
does the same for channel counts) can make every pruned layer keep a multiple of N MLP
neurons: llama.cpp's tiled f16/f32 matrix kernels need the inner dimension (down_proj's
input, the MLP width) to be a multiple of 8 and fall back to a slower path otherwise
(results/bench/llamacpp-widths.md).
"""

from __future__ import annotations

import torch

from structprune.model.geometry import LayerGeometry
from structprune.pruning.units import LayerBudget, effective_head_mode, head_unit_params, neuron_params
from structprune.spec.catalog import BUDGETS, SPARSITY_OF
from structprune.spec.layerratios import (  # noqa: F401  (re-exported: the allocation's vocabulary)
    MAX_LAYER_RATIO,
    default_layer_range,
    increasing_ratios,
    mlp_only_neurons,
    resolve_layer_range,
    round_half_up,
)
from structprune.spec.recipe import round_to_problem


def layer_ratio(
    geometries: list[LayerGeometry], sparsity: float, layer_range: tuple[int, int],
    sparsity_of: str = "blocks", total_params: int | None = None,
) -> float:
    """The fraction of each pruned layer's block parameters to remove."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if sparsity_of not in SPARSITY_OF:
        raise ValueError(f"sparsity_of must be one of {SPARSITY_OF}, got {sparsity_of!r}")
    start, end = layer_range
    pruned = sum(g.block_params for g in geometries[start:end])
    if sparsity_of == "total":
        if total_params is None:
            raise ValueError("sparsity_of 'total' needs the model's total parameter count")
        target = sparsity * total_params
    else:
        target = sparsity * sum(g.block_params for g in geometries)
    ratio = target / pruned
    if ratio >= MAX_LAYER_RATIO:
        raise ValueError(
            f"sparsity {sparsity} of {sparsity_of} parameters over layers [{start}, {end}) needs removing "
            f"{ratio:.0%} of each pruned layer; widen the layer range or lower the sparsity"
        )
    return ratio


def matched_budget(geometry: LayerGeometry, ratio: float, mode: str) -> LayerBudget:
    """Heads at the ratio rounded half up (GQA-allowed), neurons take the remainder (ours)."""
    mode = effective_head_mode(geometry, mode)
    if mode == "within_kv_groups":
        heads = min(round_half_up(ratio * geometry.heads_per_kv), geometry.heads_per_kv - 1)
    else:
        heads = min(round_half_up(ratio * geometry.num_kv_heads), geometry.num_kv_heads - 1)
    removed = heads * head_unit_params(geometry, mode)
    neurons = round_half_up((ratio * geometry.block_params - removed) / neuron_params(geometry))
    return LayerBudget(heads, max(0, min(neurons, geometry.intermediate_size - 1)))


def per_module_budget(geometry: LayerGeometry, ratio: float, mode: str) -> LayerBudget:
    """LLM-Pruner's rounding, per pruning root and independently for attention and the MLP.

    Torch-Pruning's ``MetaPruner`` as vendored in horseee/LLM-Pruner (``metapruner.py``, local
    mode): ``n_pruned = C - int(C * (1 - ratio))`` channels of the root (q_proj in
    ``hf_prune.py``, k_proj in ``llama3.py`` under grouped-query attention), then
    ``n_pruned // head_dim`` whole heads (kv groups) go; the MLP root (gate_proj) loses
    ``I - int(I * (1 - ratio))`` neurons. Where the reference's head count is 0 while
    n_pruned > 0 it crashes on an empty index list (``torch.cat`` of nothing; docs/baselines.md);
    we remove no head there and still prune the MLP (the reference's MLP ratio).
    """
    mode = effective_head_mode(geometry, mode)
    if mode == "within_kv_groups":
        channels, per_unit, units = geometry.heads_per_kv * geometry.head_dim, geometry.head_dim, geometry.heads_per_kv
    else:
        channels, per_unit, units = geometry.num_kv_heads * geometry.head_dim, geometry.head_dim, geometry.num_kv_heads
    heads = min((channels - int(channels * (1 - ratio))) // per_unit, units - 1)
    size = geometry.intermediate_size
    neurons = min(size - int(size * (1 - ratio)), size - 1)
    return LayerBudget(heads, neurons)


def mlp_only_exhausted(ratio: float) -> ValueError:
    """The error of a budget 'mlp_only' whose neurons cannot carry the layers' target."""
    return ValueError(
        f"budget 'mlp_only' at a layer ratio of {ratio:.0%} would remove every MLP neuron; use budget "
        "'matched' (heads too) or a lower sparsity"
    )


def mlp_only_budget(geometry: LayerGeometry, ratio: float, mode: str) -> LayerBudget:
    """No head removed; neurons take the layer's whole target, rounded half up (ours)."""
    neurons = mlp_only_neurons(ratio, geometry.block_params, neuron_params(geometry))
    if neurons >= geometry.intermediate_size:
        raise mlp_only_exhausted(ratio)
    return LayerBudget(0, neurons)


BUDGET_RULES = {"matched": matched_budget, "per_module": per_module_budget, "mlp_only": mlp_only_budget}


def budgets_at(geometries: list[LayerGeometry], ratios: list[float], layer_range: tuple[int, int], mode: str,
                budget: str) -> list[LayerBudget]:
    """Each pruned layer's budget at its own ratio (`ratios`, one per layer of the range) by the
    budget rule; the layers outside the range lose nothing."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    make = BUDGET_RULES[budget]
    start, end = layer_range
    return [make(g, ratios[i - start], mode) if start <= i < end else LayerBudget(0, 0) for i, g in enumerate(geometries)]


def uniform_budgets(
    geometries: list[LayerGeometry], ratio: float, layer_range: tuple[int, int], mode: str, budget: str = "matched"
) -> list[LayerBudget]:
    return budgets_at(geometries, [ratio] * (layer_range[1] - layer_range[0]), layer_range, mode, budget)


def increasing_budgets(
    geometries: list[LayerGeometry], ratio: float, layer_range: tuple[int, int], mode: str, budget: str = "matched"
) -> list[LayerBudget]:
    """Each pruned layer's budget at its SlimGPT ratio (`increasing_ratios`), by the budget rule."""
    ratios = increasing_ratios(layer_range[1] - layer_range[0], ratio)
    if ratios and ratios[-1] >= 1:
        raise ValueError(f"the increasing schedule would remove {100 * ratios[-1]:.0f} % of the last pruned layer at "
                         f"this sparsity: use allocation uniform or a lower sparsity")
    return budgets_at(geometries, ratios, layer_range, mode, budget)


def global_budgets(
    scores: dict[str, torch.Tensor], geometries: list[LayerGeometry], ratio: float,
    layer_range: tuple[int, int], mode: str = "kv_groups", budget: str = "matched",
) -> list[LayerBudget]:
    """FLAP's adaptive structure (AL-AM) over the pruned layers.

    CASIA-IVA-Lab/FLAP ``lib/prune.py`` ``prune_flap`` (structure "AL-AM"): every unit is
    weighted by its parameter count (an MLP neuron 3*hidden; a head 4*hidden*head_dim in the
    reference's multi-head attention), all units are sorted by score, descending, the unit k
    whose cumulative weight is closest to (1 - ratio) * total weight is found, and the units
    ranked above it are kept (the unit at k itself is dropped, as the reference does).

    Grouped-query attention (ours; the reference has only multi-head attention): the
    attention unit is a whole kv group (weight: its query heads, k/v rows and o columns),
    scored by the mean of its heads' scores (FLAP averages a head's channel scores). Only
    layers in `layer_range` take part (the paper runs FLAP on blocks 4..30 of LLaMA-7B).
    One kv group and one neuron per layer are always kept (the reference has no floor).

    ``budget="mlp_only"`` (ours): only MLP neurons enter the ranking, attention stays whole,
    and the kept weight is (1 - ratio) of the pruned layers' block weight less their whole
    attention, so the layers still lose the target fraction of block parameters.
    """
    if budget not in ("matched", "mlp_only"):
        raise ValueError(f"the global allocation takes budget 'matched' (kv groups and neurons) or 'mlp_only', got {budget!r}")
    heads_too = budget == "matched"
    if heads_too and mode != "kv_groups":
        raise ValueError(
            "the global allocation removes whole kv groups (a query head alone would leave uneven "
            "groups): set the method's heads to kv_groups"
        )
    start, end = layer_range
    units = []  # (score, weight, layer, kind, index)
    for layer in range(start, end):
        g = geometries[layer]
        if heads_too:
            group_scores = scores[f"layers.{layer}.heads"].to(torch.float64).reshape(g.num_kv_heads, g.heads_per_kv).mean(1)
            units += [(float(s), head_unit_params(g, "kv_groups"), layer, 0, kv) for kv, s in enumerate(group_scores)]
        units += [(float(s), neuron_params(g), layer, 1, i) for i, s in enumerate(scores[f"layers.{layer}.neurons"].to(torch.float64))]
    units.sort(key=lambda u: (-u[0], u[2], u[3], u[4]))  # deterministic order for ties
    cumulative = torch.tensor([u[1] for u in units], dtype=torch.float64).cumsum(0)
    ranked_weight = float(cumulative[-1])
    if heads_too:
        keep_weight = (1.0 - ratio) * ranked_weight
    else:  # the whole attention stays, so the neurons keep what is left of (1 - ratio) of the blocks
        block_weight = sum(geometries[i].block_params for i in range(start, end))
        keep_weight = (1.0 - ratio) * block_weight - (block_weight - ranked_weight)
    if keep_weight <= 0:  # only without heads: layer_ratio caps the ratio below 1
        raise mlp_only_exhausted(ratio)
    keep_count = len(units) if ratio == 0.0 else int(torch.argmin((cumulative - keep_weight).abs()))
    removed = [0] * len(geometries), [0] * len(geometries)
    for _, _, layer, kind, _ in units[keep_count:]:
        removed[kind][layer] += 1
    return [
        LayerBudget(min(removed[0][i], g.num_kv_heads - 1), min(removed[1][i], g.intermediate_size - 1))
        for i, g in enumerate(geometries)
    ]


def round_kept_neurons(budgets: list[LayerBudget], geometries: list[LayerGeometry], round_to: int) -> list[LayerBudget]:
    """Each pruned layer keeps the multiple of `round_to` MLP neurons nearest to what its budget
    keeps (halves up; at least `round_to`, at most the layer's width); layers that lose no
    neuron stay whole. The sparsity moves by less than `round_to` / 2 neurons per layer."""
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    widest = max((g.intermediate_size for b, g in zip(budgets, geometries) if b.neurons), default=0)
    if problem := round_to_problem(round_to, widest, "the pruned layers'"):
        raise ValueError(f"round_to {problem}")
    out = []
    for budget, g in zip(budgets, geometries, strict=True):
        if budget.neurons == 0:
            out.append(budget)
            continue
        kept = round_half_up((g.intermediate_size - budget.neurons) / round_to) * round_to
        kept = min(max(kept, round_to), g.intermediate_size)
        out.append(LayerBudget(budget.heads, g.intermediate_size - kept))
    return out
