"""Wanda-sp: the structured Wanda score, as implemented in FLAP's repository.

Follows CASIA-IVA-Lab/FLAP ``lib/prune.py`` (``prune_wanda_sp``) and
``lib/layerwrapper.py`` (``WrappedGPT.add_batch``); FLAP paper (arXiv 2312.11983)
Sec. 4.1 baselines. Per input channel j of o_proj / down_proj::

    s_j = mean_i |W_ij| * sqrt(E[x_j^2])

(the element-wise Wanda metric |W_ij| ||X_j||, averaged over the output rows).
A head's score is the *sum* of its ``head_dim`` channel scores; an MLP neuron's is
its down_proj column's score. The reference sums x_j^2 over a sequence's tokens and
averages over sequences; we use the token mean, which differs by the constant
sequence length and ranks identically.

In the reference the statistics flow layer by layer through the already pruned
layers (each layer is scored on the outputs of the pruned previous layers, with its
own attention still dense when the MLP's statistics are taken). Here that is the
``flow: sequential`` path of the engine (``engine.py``), which feeds this scorer
the pruned stream's statistics.
"""

from __future__ import annotations

import torch

from structprune.pruning.scores.registry import (
    LayerWeights,
    Scorer,
    UnitScores,
    per_head,
    register,
    second_moment_diagonal,
)


def wanda_channel_scores(weight: torch.Tensor, input_second_moment: torch.Tensor) -> torch.Tensor:
    """mean_i |W_ij| * sqrt(E[x_j^2]) per input channel j of `weight` (out, in)."""
    w = weight.to(torch.float64)
    return w.abs().mean(0) * input_second_moment.to(torch.float64).clamp_min(0).sqrt()


def wanda_sp_scores(weights: LayerWeights, stats: dict[str, torch.Tensor]) -> UnitScores:
    o_energy = second_moment_diagonal(stats, "o_proj_in")
    down_energy = second_moment_diagonal(stats, "down_proj_in")
    heads = per_head(wanda_channel_scores(weights.o, o_energy), weights.geometry.head_dim)
    neurons = wanda_channel_scores(weights.down, down_energy)
    return UnitScores(heads, neurons)


@register("wanda_sp", citation="FLAP repo lib/prune.py prune_wanda_sp (Wanda-sp)")
def make_wanda_sp() -> Scorer:
    return wanda_sp_scores
