"""Unit importance scores: one contract, one registry (as Torch-Pruning's importance functions).

A scorer maps one decoder layer's weights (and, for data-aware methods, its
calibration statistics) to a score per pruning unit::

    scorer(weights: LayerWeights, stats: dict[str, Tensor] | None) -> UnitScores

Units are depth-2: attention head h = rows h of q_proj (and its kv group's
k/v rows) + columns h of o_proj; MLP neuron i = row i of gate_proj and up_proj
+ column i of down_proj. Higher score = more important = kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from structprune.model.geometry import LayerGeometry, decoder_layers, layer_geometry, model_head_dim
from structprune.spec.catalog import SCORES


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

    def without_neurons(self) -> "LayerWeights":
        """The same layer with an empty MLP: for scoring its heads only (the neuron scores,
        then empty, cost nothing; every score's head scores read no MLP weight or site)."""
        return replace(self, geometry=replace(self.geometry, intermediate_size=0),
                       gate=self.gate[:0], up=self.up[:0], down=self.down[:, :0])


@dataclass(frozen=True)
class UnitScores:
    heads: torch.Tensor  # (num_heads,) one per query head
    neurons: torch.Tensor  # (intermediate,)


def per_head(channel_scores: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Sum channel scores over each head's consecutive channels (LLM-Pruner's consecutive_groups)."""
    return channel_scores.reshape(-1, head_dim).sum(1)


Scorer = Callable[[LayerWeights, "dict[str, torch.Tensor] | None"], UnitScores]


@dataclass(frozen=True)
class ScoreMethod:
    name: str
    make: Callable[..., Scorer]  # options -> scorer
    citation: str
    statistics: str  # what it reads: none, moments or gradients (spec/catalog.py)

    @property
    def needs_calibration(self) -> bool:
        return self.statistics != "none"


REGISTRY: dict[str, ScoreMethod] = {}


def register(name: str, citation: str):
    """Register a score's maker under its catalog name; what it reads comes from the catalog."""
    if name not in SCORES:
        raise ValueError(f"score {name!r} is not in spec/catalog.py SCORES: add its entry there")

    def wrap(make):
        REGISTRY[name] = ScoreMethod(name, make, citation, SCORES[name][1])
        return make
    return wrap


def score_method(name: str) -> ScoreMethod:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown scoring method {name!r}; known: {sorted(REGISTRY)}") from None


# --------------------------------------------------------------------------- whole model

def score_model(
    model: nn.Module,
    method: str,
    stats: dict[str, torch.Tensor] | None = None,
    options: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Scores of every layer: ``layers.{i}.heads`` and ``layers.{i}.neurons`` (float64)."""
    from structprune.calibration.statistics import layer_statistics

    spec = score_method(method)
    if spec.needs_calibration and stats is None:
        raise ValueError(f"method {method!r} needs calibration statistics (--stats)")
    if stats is not None and spec.needs_calibration:
        has_gradients = any(".taylor." in key for key in stats)
        if has_gradients != (spec.statistics == "gradients"):
            wanted = "backprop saliencies (the `gradients` stage)" if spec.statistics == "gradients" else "activation moments (the `calibrate` stage)"
            raise ValueError(f"method {method!r} reads {wanted}; the --stats file holds the other kind")
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


def second_moment_diagonal(stats: dict[str, torch.Tensor], site: str) -> torch.Tensor:
    """E[x_i^2] at `site` of one layer's statistics, from its diagonal or its full matrix."""
    if f"{site}.second_moment_diag" in stats:
        return stats[f"{site}.second_moment_diag"]
    return stats[f"{site}.second_moment"].diagonal()
