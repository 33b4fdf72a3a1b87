"""SlimGPT's OBS error as a unit score (Ling et al., NeurIPS 2024, Sec. 3.2; reference
`slimgpt_pub/slim_utils/slimgpt.py` `struct_prune`).

A head's score is the summed OBS error of its o_proj input columns (the grouped-Cholesky
diagonal of its block of H^-1), a neuron's the OBS error of its down_proj column, with
H = (2 / N) X X^T + percdamp x mean diag on each map's input: the errors SlimGPT ranks by at
the first step of its greedy loop. The loop itself (remove the cheapest, compensate, rank
again) is `reconstruct: obs` (pruning/obsflow.py), which also supplies the full input moments
this score reads; so the score runs on the pruned stream inside that reconstruction only.
"""

from __future__ import annotations

import torch

from structprune.pruning.obs import PERCDAMP, column_errors, hessian, inverse_hessian
from structprune.pruning.scores.registry import LayerWeights, Scorer, UnitScores, per_head, register


def obs_scores(weights: LayerWeights, stats: dict[str, torch.Tensor], percdamp: float = PERCDAMP) -> UnitScores:
    """First-step OBS errors of every head and neuron, from the full second moments of
    o_proj's and down_proj's inputs (`*.second_moment`, E[x x^T]; the count cancels)."""
    head_dim = weights.geometry.head_dim
    h_attn = hessian(stats["o_proj_in.second_moment"], 2, percdamp)  # (2 / 2) E[x x^T]: the scale does not rank
    h_mlp = hessian(stats["down_proj_in.second_moment"], 2, percdamp)
    heads = per_head(column_errors(weights.o.to(torch.float64), inverse_hessian(h_attn), head_dim), head_dim)
    neurons = column_errors(weights.down.to(torch.float64), inverse_hessian(h_mlp))
    return UnitScores(heads, neurons)


@register("obs", citation="SlimGPT (NeurIPS 2024) Sec. 3.2, slimgpt_pub struct_prune: OBS error with grouped Cholesky")
def make_obs(percdamp: float = PERCDAMP, greedy: bool = True) -> Scorer:
    """greedy: with reconstruct obs, SlimGPT's loop re-ranks after every removal (the
    reference); False ranks once by these first-step errors (ours, an ablation)."""
    if isinstance(percdamp, bool) or not isinstance(percdamp, (int, float)) or not 0 <= percdamp < 10:
        raise ValueError(f"obs: percdamp must be a number in [0, 10), got {percdamp!r}")
    return lambda weights, stats: obs_scores(weights, stats, percdamp)
