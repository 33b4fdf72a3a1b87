"""Scores + allocation + unit selection -> a prune plan (which units each layer keeps).

The pieces live in `allocation` (how many units each layer loses) and `units` (which
ones); this module composes them for the dense flow, where every layer's scores are known
before any layer is sliced. The engine (`engine.py`) uses the same pieces layer by layer.
"""

from __future__ import annotations

import torch

from structprune.model.geometry import LayerGeometry
from structprune.pruning.allocation import global_budgets, layer_ratio, matched_budget, uniform_budgets
from structprune.pruning.units import LayerBudget, LayerPlan, PrunePlan, select_heads, select_units  # noqa: F401


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


def plan_from_budgets(
    scores: dict[str, torch.Tensor], geometries: list[LayerGeometry], budgets: list[LayerBudget], head_mode: str
) -> PrunePlan:
    check_scores(scores, geometries)
    return PrunePlan([
        select_units(scores[f"layers.{i}.heads"], scores[f"layers.{i}.neurons"], g, b, head_mode)
        for i, (g, b) in enumerate(zip(geometries, budgets))
    ])


def plan_heads(head_scores, geometry: LayerGeometry, ratio: float, mode: str) -> tuple[list[int], list[int]]:
    """Kept query heads and kv heads of one layer at `ratio` (matched budget)."""
    return select_heads(head_scores, geometry, matched_budget(geometry, ratio, mode).heads, mode)


def plan_layer(head_scores, neuron_scores, geometry: LayerGeometry, ratio: float, head_mode: str) -> LayerPlan:
    return select_units(head_scores, neuron_scores, geometry, matched_budget(geometry, ratio, head_mode), head_mode)


def plan_uniform(
    scores: dict[str, torch.Tensor], geometries: list[LayerGeometry], sparsity: float,
    head_mode: str = "within_kv_groups", layer_range: tuple[int, int] | None = None,
    budget: str = "matched", sparsity_of: str = "blocks", total_params: int | None = None,
) -> PrunePlan:
    """Remove `sparsity` of the parameters, the same ratio in every layer of `layer_range`
    (default: all layers)."""
    layer_range = layer_range or (0, len(geometries))
    if not 0 <= layer_range[0] < layer_range[1] <= len(geometries):
        raise ValueError(f"layer range {layer_range} is outside the model's {len(geometries)} layers")
    ratio = layer_ratio(geometries, sparsity, layer_range, sparsity_of, total_params)
    return plan_from_budgets(scores, geometries, uniform_budgets(geometries, ratio, layer_range, head_mode, budget), head_mode)


def plan_global(
    scores: dict[str, torch.Tensor], geometries: list[LayerGeometry], sparsity: float,
    head_mode: str = "kv_groups", layer_range: tuple[int, int] | None = None,
    sparsity_of: str = "blocks", total_params: int | None = None,
) -> PrunePlan:
    """FLAP's adaptive structure over `layer_range` (default: all layers); see
    `allocation.global_budgets`."""
    layer_range = layer_range or (0, len(geometries))
    check_scores(scores, geometries)
    ratio = layer_ratio(geometries, sparsity, layer_range, sparsity_of, total_params)
    return plan_from_budgets(scores, geometries, global_budgets(scores, geometries, ratio, layer_range, head_mode), head_mode)
