"""Data-free scores: random and weight magnitudes (no calibration statistics)."""

from __future__ import annotations

import torch

from structprune.pruning.scores.registry import LayerWeights, Scorer, UnitScores, per_head, register


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


@register("random", citation="LLM-Pruner tp.importance.RandomImportance")
def make_random(seed: int = 0) -> Scorer:
    """Uniform random scores, seeded per (seed, layer) so every layer draws independently."""

    def scorer(weights: LayerWeights, stats=None) -> UnitScores:
        generator = torch.Generator().manual_seed(seed * 100_003 + weights.index)
        g = weights.geometry
        heads = torch.rand(g.num_heads, generator=generator, dtype=torch.float64)
        neurons = torch.rand(g.intermediate_size, generator=generator, dtype=torch.float64)
        return UnitScores(heads, neurons)

    return scorer


@register("l1", citation="LLM-Pruner MagnitudeImportance(p=1)")
def make_l1() -> Scorer:
    return lambda weights, stats=None: magnitude_scores(weights, p=1)


@register("l2", citation="LLM-Pruner MagnitudeImportance(p=2)")
def make_l2() -> Scorer:
    return lambda weights, stats=None: magnitude_scores(weights, p=2)


def depth2_magnitude_scores(weights: LayerWeights) -> UnitScores:
    """Depth-2 magnitude ||W1[:, i]|| * ||W2[i, :]||, the paper's data-free comparison.

    For a SwiGLU neuron, W1[:, i] is its input weights (gate and up rows together) and
    W2[i, :] its down_proj column; for a head, its q rows (plus k/v rows under MHA, where
    they are removed with it) and its o_proj columns. Frobenius norms, in float64.
    """
    g = weights.geometry
    w = {name: getattr(weights, name).to(torch.float64) for name in ("q", "k", "v", "o", "gate", "up", "down")}
    head_in = per_head(_row_norms(w["q"], 2), g.head_dim)
    if g.num_kv_heads == g.num_heads:
        head_in = head_in + per_head(_row_norms(w["k"], 2) + _row_norms(w["v"], 2), g.head_dim)
    head_out = per_head(_column_norms(w["o"], 2), g.head_dim)
    neuron_in = _row_norms(w["gate"], 2) + _row_norms(w["up"], 2)
    neuron_out = _column_norms(w["down"], 2)
    return UnitScores((head_in * head_out).sqrt(), (neuron_in * neuron_out).sqrt())


@register("magnitude2", citation="arXiv 2407.19126 depth-2 magnitude baseline")
def make_magnitude2() -> Scorer:
    return lambda weights, stats=None: depth2_magnitude_scores(weights)
