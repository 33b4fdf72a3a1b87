"""FLAP: fluctuation-based scores, standardised per layer, with bias compensation.

Follows CASIA-IVA-Lab/FLAP (arXiv 2312.11983, Sec. 3.1-3.3): ``lib/prune.py``
(``metrics``, ``prune_flap``, ``compress``) and ``lib/layerwrapper.py``
(``BiasGPT.add_batch``). Per input channel j of o_proj / down_proj, on the
*dense* model's calibration statistics:

- WIFV (default): m_j = Var[x_j] * ||W[:, j]||^2 (fluctuation of the channel
  times the squared norm of the weight column it feeds);
- IFV: m_j = Var[x_j];  WIFN: m_j = mean_i |W_ij| * sqrt(E[x_j^2]) (Wanda's).

Attention channel scores are squared (the reference applies ``** 2`` to o_proj's
metric only). Each layer's attention channels and MLP channels are standardised
separately, z = (m - mean) / std (unbiased std, as ``torch.std``); a head's score
is the *mean* of its channels' z. Standardisation makes scores of different
layers and modules comparable for the global structure (``plan.plan_global``);
within one layer it keeps the ranking, so the uniform structure (the reference's
UL-UM, which sums raw m^2 per head) removes the same units.

Variance is E[x^2] - E[x]^2 over all calibration tokens; the reference's running
recurrence drops the first sequence and scales by the sequence length, which
changes no ranking after standardisation (docs/baselines.md).

Bias compensation (``compress``): the removed channels' mean contribution
W[:, removed] @ E[x_removed] is added to the output bias of o_proj / down_proj
(``prune.compensation_bias``, applied by ``prune.prune_model``).
"""

from __future__ import annotations

import torch

from structprune.pruning.scores import wanda
from structprune.pruning.scores.registry import LayerWeights, Scorer, UnitScores, register, second_moment_diagonal

METRICS = ("WIFV", "IFV", "WIFN")


def channel_variance(mean: torch.Tensor, second_moment_diag: torch.Tensor) -> torch.Tensor:
    """Var[x_j] = E[x_j^2] - E[x_j]^2 (float64; clamped at 0 against round-off)."""
    mean = mean.to(torch.float64)
    return (second_moment_diag.to(torch.float64) - mean * mean).clamp_min(0)


def fluctuation_metric(weight: torch.Tensor, mean: torch.Tensor, second_moment_diag: torch.Tensor, metric: str) -> torch.Tensor:
    """FLAP's per-input-channel metric m_j for one linear layer `weight` (out, in)."""
    if metric == "WIFV":
        return channel_variance(mean, second_moment_diag) * weight.to(torch.float64).pow(2).sum(0)
    if metric == "IFV":
        return channel_variance(mean, second_moment_diag)
    if metric == "WIFN":
        return wanda.wanda_channel_scores(weight, second_moment_diag)
    raise ValueError(f"unknown FLAP metric {metric!r}; choose one of {METRICS}")


def standardize(values: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std with the unbiased std; a constant vector (or fewer than two values)
    maps to zeros."""
    if values.numel() < 2:
        return torch.zeros_like(values)
    std = values.std()
    if not torch.isfinite(std) or std == 0:
        return torch.zeros_like(values)
    return (values - values.mean()) / std


def flap_scores(weights: LayerWeights, stats: dict[str, torch.Tensor], metric: str = "WIFV") -> UnitScores:
    head_dim = weights.geometry.head_dim
    attn = fluctuation_metric(
        weights.o, stats["o_proj_in.mean"], second_moment_diagonal(stats, "o_proj_in"), metric
    ).pow(2)
    mlp = fluctuation_metric(weights.down, stats["down_proj_in.mean"], second_moment_diagonal(stats, "down_proj_in"), metric)
    heads = standardize(attn).reshape(-1, head_dim).mean(1)
    return UnitScores(heads, standardize(mlp))


@register("flap", citation="FLAP (arXiv 2312.11983) lib/prune.py prune_flap, metric WIFV")
def make_flap(metric: str = "WIFV") -> Scorer:
    if metric not in METRICS:
        raise ValueError(f"flap: unknown metric {metric!r}; choose one of {METRICS}")
    return lambda weights, stats: flap_scores(weights, stats, metric)
