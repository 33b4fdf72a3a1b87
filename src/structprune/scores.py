"""Unit importance scores: one contract, one registry (as Torch-Pruning's importance functions).

A scorer maps one decoder layer's weights (and, for data-aware methods, its
calibration statistics) to a score per pruning unit::

    scorer(weights: LayerWeights, stats: dict[str, Tensor] | None) -> UnitScores

Units are depth-2: attention head h = rows h of q_proj (and its kv group's
k/v rows) + columns h of o_proj; MLP neuron i = row i of gate_proj and up_proj
+ column i of down_proj. Higher score = more important = kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from structprune.models import LayerGeometry, decoder_layers, layer_geometry, model_head_dim


@dataclass(frozen=True)
class LayerWeights:
    index: int
    geometry: LayerGeometry
    q: torch.Tensor  # (heads*head_dim, hidden)
    k: torch.Tensor  # (kv_heads*head_dim, hidden)
    v: torch.Tensor
    o: torch.Tensor  # (hidden, heads*head_dim)
    gate: torch.Tensor  # (intermediate, hidden)
    up: torch.Tensor
    down: torch.Tensor  # (hidden, intermediate)

    @classmethod
    def from_layer(cls, index: int, layer: nn.Module, head_dim: int) -> "LayerWeights":
        attn, mlp = layer.self_attn, layer.mlp
        w = lambda linear: linear.weight.detach()  # noqa: E731
        return cls(
            index, layer_geometry(layer, head_dim),
            w(attn.q_proj), w(attn.k_proj), w(attn.v_proj), w(attn.o_proj),
            w(mlp.gate_proj), w(mlp.up_proj), w(mlp.down_proj),
        )


@dataclass(frozen=True)
class UnitScores:
    heads: torch.Tensor  # (num_heads,) one per query head
    neurons: torch.Tensor  # (intermediate,)


Scorer = Callable[[LayerWeights, "dict[str, torch.Tensor] | None"], UnitScores]


@dataclass(frozen=True)
class ScoreMethod:
    name: str
    make: Callable[..., Scorer]  # options -> scorer
    needs_calibration: bool
    citation: str


REGISTRY: dict[str, ScoreMethod] = {}


def register(name: str, needs_calibration: bool, citation: str):
    def wrap(make):
        REGISTRY[name] = ScoreMethod(name, make, needs_calibration, citation)
        return make
    return wrap


def score_method(name: str) -> ScoreMethod:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown scoring method {name!r}; known: {sorted(REGISTRY)}") from None


# --------------------------------------------------------------------------- helpers

def per_head(channel_scores: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Sum channel scores over each head's consecutive channels (LLM-Pruner's consecutive_groups)."""
    return channel_scores.reshape(-1, head_dim).sum(1)


def _row_norms(weight: torch.Tensor, p: int) -> torch.Tensor:
    return weight.abs().pow(p).sum(1)


def _column_norms(weight: torch.Tensor, p: int) -> torch.Tensor:
    return weight.abs().pow(p).sum(0)


def magnitude_scores(weights: LayerWeights, p: int) -> UnitScores:
    """LLM-Pruner's L1/L2 importance (``MagnitudeImportance(p)``, group_reduction="mean").

    Follows horseee/LLM-Pruner ``LLMPruner/pruner/hf_llama_pruner.py``
    (``MagnitudeImportance.__call__``) as used by ``hf_prune.py --pruner_type l1|l2``:
    for every coupled layer of a group, the channel's ``sum |w|^p`` over its slice
    (output rows of gate/up/q/k/v, input columns of down/o); the group's importance
    is the *mean* over those layers; a head sums its ``head_dim`` channels
    (``consecutive_groups``). Note p-th powers are summed, not their roots.
    With grouped-query attention a query head's k/v rows are shared by its kv
    group and are not removed with it, so they do not enter its score.
    """
    w = {name: getattr(weights, name).to(torch.float64) for name in ("q", "k", "v", "o", "gate", "up", "down")}
    head_parts = [_row_norms(w["q"], p), _column_norms(w["o"], p)]
    if weights.geometry.num_kv_heads == weights.geometry.num_heads:  # MHA: k and v are coupled too
        head_parts += [_row_norms(w["k"], p), _row_norms(w["v"], p)]
    head_channels = torch.stack(head_parts).mean(0)
    neurons = torch.stack(
        [_row_norms(w["gate"], p), _row_norms(w["up"], p), _column_norms(w["down"], p)]
    ).mean(0)
    return UnitScores(per_head(head_channels, weights.geometry.head_dim), neurons)


# --------------------------------------------------------------------------- registry

@register("random", needs_calibration=False, citation="LLM-Pruner tp.importance.RandomImportance")
def make_random(seed: int = 0) -> Scorer:
    """Uniform random scores, seeded per (seed, layer) so every layer draws independently."""

    def scorer(weights: LayerWeights, stats=None) -> UnitScores:
        generator = torch.Generator().manual_seed(seed * 100_003 + weights.index)
        g = weights.geometry
        heads = torch.rand(g.num_heads, generator=generator, dtype=torch.float64)
        neurons = torch.rand(g.intermediate_size, generator=generator, dtype=torch.float64)
        return UnitScores(heads, neurons)

    return scorer


@register("l1", needs_calibration=False, citation="LLM-Pruner MagnitudeImportance(p=1)")
def make_l1() -> Scorer:
    return lambda weights, stats=None: magnitude_scores(weights, p=1)


@register("l2", needs_calibration=False, citation="LLM-Pruner MagnitudeImportance(p=2)")
def make_l2() -> Scorer:
    return lambda weights, stats=None: magnitude_scores(weights, p=2)


# --------------------------------------------------------------------------- whole model

def score_model(
    model: nn.Module,
    method: str,
    stats: dict[str, torch.Tensor] | None = None,
    options: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Scores of every layer: ``layers.{i}.heads`` and ``layers.{i}.neurons`` (float64)."""
    from structprune.calibration import layer_statistics

    spec = score_method(method)
    if spec.needs_calibration and stats is None:
        raise ValueError(f"method {method!r} needs calibration statistics (--stats)")
    scorer = spec.make(**(options or {}))
    head_dim = model_head_dim(model.config)
    out: dict[str, torch.Tensor] = {}
    for index, layer in enumerate(decoder_layers(model)):
        weights = LayerWeights.from_layer(index, layer, head_dim)
        layer_stats = layer_statistics(stats, index) if stats is not None else None
        scores = scorer(weights, layer_stats)
        out[f"layers.{index}.heads"] = scores.heads.to(torch.float64)
        out[f"layers.{index}.neurons"] = scores.neurons.to(torch.float64)
    return out
