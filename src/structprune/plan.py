"""Which units to remove: turning scores and a target sparsity into a prune plan.

Sparsity is the fraction of *decoder-block* parameters removed (attention
q/k/v/o + MLP gate/up/down; embeddings, norms and the LM head are never
pruned). It is split between heads and neurons as follows, per pruned layer:

1. Attention first, at the target ratio rounded to what grouped-query
   attention allows: with ``heads="within_kv_groups"`` (default) the same
   number ``round(ratio * heads_per_kv)`` of query heads is removed inside every
   kv group (the lowest-scoring ones of that group), so the stock Llama
   ``repeat_kv`` still applies; with ``heads="kv_groups"`` whole kv groups
   (their query heads and their k/v rows) are removed, ranked by the sum of
   their heads' scores. At least one head per group (one group) is kept.
2. MLP neurons then take the remainder: the lowest-scoring
   ``round((ratio * block_params - attention_removed) / (3 * hidden))`` neurons
   are removed, so each layer's removed parameters match the target to within
   one neuron even though heads are coarse.

When only some layers are pruned (``layers=[start, end)``, LLM-Pruner's
block-wise recipe), the ratio inside them is raised so that the whole model
still loses ``sparsity`` of its decoder-block parameters. The same ratio is
used for every pruned layer: uniform structure. (Methods with a global,
per-layer structure such as FLAP bring their own planner.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from structprune.models import LayerGeometry

HEAD_MODES = ("within_kv_groups", "kv_groups")


@dataclass(frozen=True)
class LayerPlan:
    keep_heads: list[int]  # query heads kept, ascending
    keep_kv_heads: list[int]  # kv heads kept, ascending
    keep_neurons: list[int]  # MLP neurons kept, ascending


@dataclass(frozen=True)
class PrunePlan:
    layers: list[LayerPlan]

    def to_json(self) -> dict:
        return {"layers": [asdict(layer) for layer in self.layers]}

    @classmethod
    def from_json(cls, payload: dict) -> "PrunePlan":
        return cls([LayerPlan(**layer) for layer in payload["layers"]])


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _lowest(scores: torch.Tensor, count: int) -> set[int]:
    """Indices of the `count` lowest scores; ties broken by index, so plans are deterministic."""
    order = sorted(range(scores.numel()), key=lambda i: (float(scores[i]), i))
    return set(order[:count])


def plan_heads(head_scores: torch.Tensor, geometry: LayerGeometry, ratio: float, mode: str) -> tuple[list[int], list[int]]:
    """Kept query heads and kv heads of one layer."""
    group = geometry.heads_per_kv
    all_heads, all_kv = list(range(geometry.num_heads)), list(range(geometry.num_kv_heads))
    if mode == "within_kv_groups":
        remove_per_group = min(_round_half_up(ratio * group), group - 1)
        removed: set[int] = set()
        for kv in all_kv:
            members = torch.arange(kv * group, (kv + 1) * group)
            removed |= {int(members[i]) for i in _lowest(head_scores[members], remove_per_group)}
        return [h for h in all_heads if h not in removed], all_kv
    if mode == "kv_groups":
        remove_groups = min(_round_half_up(ratio * geometry.num_kv_heads), geometry.num_kv_heads - 1)
        group_scores = head_scores.reshape(geometry.num_kv_heads, group).sum(1)
        removed_kv = _lowest(group_scores, remove_groups)
        kept_kv = [kv for kv in all_kv if kv not in removed_kv]
        return [h for h in all_heads if h // group in kept_kv], kept_kv
    raise ValueError(f"unknown head mode {mode!r}; choose one of {HEAD_MODES}")


def attention_params_removed(geometry: LayerGeometry, kept_heads: int, kept_kv: int) -> int:
    per_head = 2 * geometry.hidden_size * geometry.head_dim  # q rows + o columns
    per_kv = 2 * geometry.hidden_size * geometry.head_dim  # k rows + v rows
    return per_head * (geometry.num_heads - kept_heads) + per_kv * (geometry.num_kv_heads - kept_kv)


def plan_layer(head_scores, neuron_scores, geometry: LayerGeometry, ratio: float, head_mode: str) -> LayerPlan:
    keep_heads, keep_kv = plan_heads(head_scores, geometry, ratio, head_mode)
    attn_removed = attention_params_removed(geometry, len(keep_heads), len(keep_kv))
    per_neuron = 3 * geometry.hidden_size
    wanted = _round_half_up((ratio * geometry.block_params - attn_removed) / per_neuron)
    remove_neurons = max(0, min(wanted, geometry.intermediate_size - 1))
    removed = _lowest(neuron_scores, remove_neurons)
    keep_neurons = [i for i in range(geometry.intermediate_size) if i not in removed]
    return LayerPlan(keep_heads, keep_kv, keep_neurons)


def check_scores(scores: dict[str, torch.Tensor], geometries: list[LayerGeometry]) -> None:
    """Reject a scores file made for another model (layer count or widths differ)."""
    for index, geometry in enumerate(geometries):
        expected = {"heads": geometry.num_heads, "neurons": geometry.intermediate_size}
        for unit, size in expected.items():
            tensor = scores.get(f"layers.{index}.{unit}")
            if tensor is None or tensor.numel() != size:
                found = None if tensor is None else tensor.numel()
                raise ValueError(
                    f"scores do not match the model: layer {index} has {size} {unit}, the scores "
                    f"file has {found}. Rerun the score stage for this model."
                )


def plan_uniform(
    scores: dict[str, torch.Tensor],
    geometries: list[LayerGeometry],
    sparsity: float,
    head_mode: str = "within_kv_groups",
    layer_range: tuple[int, int] | None = None,
) -> PrunePlan:
    """Remove `sparsity` of the decoder-block parameters, same ratio in every pruned layer."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    start, end = layer_range or (0, len(geometries))
    if not 0 <= start < end <= len(geometries):
        raise ValueError(f"layer range {layer_range} is outside the model's {len(geometries)} layers")
    total = sum(g.block_params for g in geometries)
    pruned_total = sum(g.block_params for g in geometries[start:end])
    ratio = sparsity * total / pruned_total
    if ratio >= 0.95:
        raise ValueError(
            f"sparsity {sparsity} over layers [{start}, {end}) needs removing {ratio:.0%} of each "
            "pruned layer; widen the layer range or lower the sparsity"
        )
    check_scores(scores, geometries)
    layers = []
    for index, geometry in enumerate(geometries):
        layer_ratio = ratio if start <= index < end else 0.0
        layers.append(
            plan_layer(scores[f"layers.{index}.heads"], scores[f"layers.{index}.neurons"], geometry, layer_ratio, head_mode)
        )
    return PrunePlan(layers)


def plan_global(
    scores: dict[str, torch.Tensor],
    geometries: list[LayerGeometry],
    sparsity: float,
    head_mode: str = "kv_groups",
) -> PrunePlan:
    """FLAP's adaptive structure (AL-AM): one threshold over all layers' heads and neurons.

    CASIA-IVA-Lab/FLAP ``lib/prune.py`` ``prune_flap`` (structure "AL-AM"): every unit
    is weighted by its parameter count (an MLP neuron 3*hidden; a head 4*hidden*head_dim
    in the reference's multi-head attention), all units are sorted by score, descending,
    the unit k whose cumulative weight is closest to (1 - sparsity) * total weight is
    found, and the units ranked above it are kept. Layers thus get different widths.

    Grouped-query attention: a query head alone cannot be dropped from an uneven kv
    group and keep Llama's ``repeat_kv``, so the attention unit is a whole kv group
    (its query heads, k/v rows and o columns; weight = their parameter count), scored by
    the mean of its heads' scores (FLAP averages a head's channel scores). Scores must be
    comparable across layers (FLAP's are standardised). Deviation: one kv group and one
    neuron per layer are always kept (the reference has no floor; it never binds at 20%).
    """
    if head_mode != "kv_groups":
        raise ValueError(
            "the global structure removes whole kv groups (a query head alone would leave uneven "
            "groups): set the method's plan.heads (or prune.heads) to kv_groups"
        )
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    check_scores(scores, geometries)
    units = []  # (score, weight, layer, kind, index)
    group_scores_of = [
        scores[f"layers.{layer}.heads"].reshape(g.num_kv_heads, g.heads_per_kv).mean(1)
        for layer, g in enumerate(geometries)
    ]
    for layer, g in enumerate(geometries):
        group_scores = group_scores_of[layer]
        group_weight = (2 * g.heads_per_kv + 2) * g.hidden_size * g.head_dim
        units += [(float(s), group_weight, layer, "kv", kv) for kv, s in enumerate(group_scores)]
        units += [(float(s), 3 * g.hidden_size, layer, "neuron", i) for i, s in enumerate(scores[f"layers.{layer}.neurons"])]
    units.sort(key=lambda u: (-u[0], u[2], u[3], u[4]))  # deterministic order for ties
    weights = torch.tensor([u[1] for u in units], dtype=torch.float64)
    cumulative = weights.cumsum(0)
    target = (1.0 - sparsity) * float(cumulative[-1])
    # FLAP keeps scores strictly above the unit at the argmin: that unit itself is dropped
    keep_count = int(torch.argmin((cumulative - target).abs()))
    if sparsity == 0.0:
        keep_count = len(units)
    kept = {(u[2], u[3], u[4]) for u in units[:keep_count]}
    layers = []
    for layer, g in enumerate(geometries):
        kv_keep = [kv for kv in range(g.num_kv_heads) if (layer, "kv", kv) in kept]
        neurons = [i for i in range(g.intermediate_size) if (layer, "neuron", i) in kept]
        if not kv_keep:
            kv_keep = [int(group_scores_of[layer].argmax())]
        if not neurons:
            neurons = [int(scores[f"layers.{layer}.neurons"].argmax())]
        heads = [h for h in range(g.num_heads) if h // g.heads_per_kv in kv_keep]
        layers.append(LayerPlan(heads, kv_keep, neurons))
    return PrunePlan(layers)
