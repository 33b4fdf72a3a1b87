"""What a pruning unit is, and which units of one layer go for a given budget.

Units are depth-2 (docs/method.md §1): a query head (its q rows and o_proj columns), a
whole kv group (its query heads plus its k/v rows), an MLP neuron (gate/up rows and the
down_proj column). Under grouped-query attention Llama's ``repeat_kv`` needs every kept
kv group to keep the same number of query heads, so the head unit is one of:

- ``within_kv_groups``: the same number of query heads leaves every kv group (the
  lowest-scoring heads of each group);
- ``kv_groups``: whole kv groups leave, ranked by the sum of their heads' scores.

Selection is deterministic: ties are broken by index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from structprune.model.geometry import LayerGeometry
from structprune.spec.catalog import HEAD_MODES


@dataclass(frozen=True)
class LayerBudget:
    """How many units one layer loses: `heads` counts query heads per kv group
    (within_kv_groups) or whole kv groups (kv_groups); `neurons` counts MLP neurons."""

    heads: int
    neurons: int


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


def lowest(scores: torch.Tensor, count: int) -> set[int]:
    """Indices of the `count` lowest scores; ties broken by index, so plans are deterministic."""
    if count <= 0:
        return set()
    values = scores.detach().to("cpu", torch.float64)
    order = sorted(range(values.numel()), key=lambda i: (float(values[i]), i))
    return set(order[:count])


def check_head_mode(mode: str) -> None:
    if mode not in HEAD_MODES:
        raise ValueError(f"unknown head mode {mode!r}; choose one of {HEAD_MODES}")


def effective_head_mode(geometry: LayerGeometry, mode: str) -> str:
    """Multi-head attention (one query head per kv head): a query head *is* a kv group, so
    `within_kv_groups` means removing whole heads with their k/v rows."""
    check_head_mode(mode)
    return "kv_groups" if geometry.heads_per_kv == 1 else mode


def select_heads(head_scores: torch.Tensor, geometry: LayerGeometry, remove: int, mode: str) -> tuple[list[int], list[int]]:
    """Kept query heads and kv heads of one layer when `remove` units of `mode` go."""
    mode = effective_head_mode(geometry, mode)
    group = geometry.heads_per_kv
    all_heads, all_kv = list(range(geometry.num_heads)), list(range(geometry.num_kv_heads))
    if mode == "within_kv_groups":
        removed: set[int] = set()
        for kv in all_kv:
            members = list(range(kv * group, (kv + 1) * group))
            removed |= {members[i] for i in lowest(head_scores[members], min(remove, group - 1))}
        return [h for h in all_heads if h not in removed], all_kv
    group_scores = head_scores.reshape(geometry.num_kv_heads, group).sum(1)
    removed_kv = lowest(group_scores, min(remove, geometry.num_kv_heads - 1))
    kept_kv = [kv for kv in all_kv if kv not in removed_kv]
    return [h for h in all_heads if h // group in kept_kv], kept_kv


def select_neurons(neuron_scores: torch.Tensor, geometry: LayerGeometry, remove: int) -> list[int]:
    """Kept MLP neurons when the `remove` lowest-scoring go (at least one stays)."""
    removed = lowest(neuron_scores, min(remove, geometry.intermediate_size - 1))
    return [i for i in range(geometry.intermediate_size) if i not in removed]


def select_units(
    head_scores: torch.Tensor, neuron_scores: torch.Tensor, geometry: LayerGeometry, budget: LayerBudget, mode: str
) -> LayerPlan:
    """The layer's plan: its lowest-scoring units within `budget` go (at least one of each kind stays)."""
    keep_heads, keep_kv = select_heads(head_scores, geometry, budget.heads, mode)
    return LayerPlan(keep_heads, keep_kv, select_neurons(neuron_scores, geometry, budget.neurons))


def head_unit_params(geometry: LayerGeometry, mode: str) -> int:
    """Parameters one head unit carries: a query head's q rows and o columns, or a whole kv
    group's query heads plus its k and v rows."""
    per_query_head = 2 * geometry.hidden_size * geometry.head_dim
    if effective_head_mode(geometry, mode) == "within_kv_groups":
        return per_query_head * geometry.num_kv_heads  # one head from every group
    return per_query_head * geometry.heads_per_kv + 2 * geometry.hidden_size * geometry.head_dim


def neuron_params(geometry: LayerGeometry) -> int:
    return 3 * geometry.hidden_size
