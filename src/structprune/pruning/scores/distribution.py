"""Distribution-aware depth-2 scores (arXiv 2407.19126), the paper's and our extensions.

Defaults are the paper's (docs/method.md): ``mlp="product"`` (Appendix B, `paper.py`) and
``redundancy="js"`` (Eq. 1 + Algorithm 2, with threshold ``tau``). Our extensions,
labelled as ours in the table and docs:

A depth-2 unit's importance is the expected squared norm of what it adds to the
block output, measured on calibration data:

- MLP neuron i (SwiGLU): the unit writes ``h_i * W_down[:, i]`` with
  ``h = silu(W_gate x) * (W_up x)``, so ``E||h_i W_down[:, i]||^2 = ||W_down[:, i]||^2 E[h_i^2]``
  (``mlp="output"``, the exact analogue for SwiGLU).
  ``mlp="closed_form"`` is the paper's formula for a two-layer MLP,
  ``||W2[i, :]||^2 * W1[:, i]^T Sigma W1[:, i]``, with ``W1[:, i]`` the unit's up_proj
  (or gate_proj) row and Sigma the second moment of the MLP input.
- Attention head h: it writes ``W_O^h z_h`` (``z_h`` = its slice of the o_proj input),
  so ``E||W_O^h z_h||^2 = tr(W_O^h^T W_O^h Sigma_z^{hh})``.
"""

from __future__ import annotations

import torch

from structprune.pruning.scores.distribution_paper import (
    candidates_first,
    gated_product_scores,
    redundancy_candidates,
    tau_at_rate,
)
from structprune.pruning.scores.registry import LayerWeights, Scorer, UnitScores, register


def head_output_gram(o_weight: torch.Tensor, z_second_moment: torch.Tensor, head_dim: int) -> torch.Tensor:
    """M[i, j] = E[<W_O^i z_i, W_O^j z_j>], the expected inner products of heads' outputs.

    With G = W_O^T W_O and Sigma = E[z z^T], M[i, j] = sum(G_ij * Sigma_ij) over the
    (head_dim x head_dim) blocks; diag(M) are the heads' expected squared outputs.
    """
    o = o_weight.to(torch.float64)
    gram = o.T @ o
    heads = gram.shape[0] // head_dim
    return (gram * z_second_moment).reshape(heads, head_dim, heads, head_dim).sum((1, 3))


def head_similarity(output_gram: torch.Tensor) -> torch.Tensor:
    """D(h_i, h_j): cosine similarity of two heads' outputs over the calibration data."""
    power = output_gram.diagonal().clamp_min(1e-30).sqrt()
    return output_gram / (power[:, None] * power[None, :])


def head_groups(similarity: torch.Tensor, threshold: float) -> list[list[int]]:
    """Connected components of the graph with an edge wherever D(h_i, h_j) >= threshold."""
    heads = similarity.shape[0]
    parent = list(range(heads))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(heads):
        for j in range(i + 1, heads):
            if similarity[i, j] >= threshold:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(heads):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values())


def grouped_head_scores(power: torch.Tensor, similarity: torch.Tensor, threshold: float) -> torch.Tensor:
    """Discount a head whose output a stronger head of its group already carries.

    Inside a group, head j keeps ``power_j * (1 - max_i D_ij^2)`` over the group's
    stronger heads i: the part of its output that a rescaled stronger head cannot
    reproduce. The strongest head of each group keeps its full score, so a redundant
    pair loses its weaker member first. See docs/method.md.
    """
    scores = power.clone()
    for group in head_groups(similarity, threshold):
        for j in group:
            stronger = [i for i in group if (power[i], -i) > (power[j], -j)]
            if stronger:
                overlap = max(float(similarity[i, j]) ** 2 for i in stronger)
                scores[j] = power[j] * (1.0 - min(overlap, 1.0))
    return scores


def mlp_output_power(down: torch.Tensor, h_second_moment: torch.Tensor) -> torch.Tensor:
    """||W_down[:, i]||^2 * E[h_i^2]."""
    return down.to(torch.float64).pow(2).sum(0) * h_second_moment


def mlp_closed_form(down: torch.Tensor, w1: torch.Tensor, x_second_moment: torch.Tensor) -> torch.Tensor:
    """||W2[i, :]||^2 * W1[:, i]^T Sigma W1[:, i] (W1 rows here are the units' input weights)."""
    w1 = w1.to(torch.float64)
    quadratic = ((w1 @ x_second_moment) * w1).sum(1)
    return down.to(torch.float64).pow(2).sum(0) * quadratic


MLP_SCORES = ("product", "output", "closed_form")
REDUNDANCY = ("js", "cosine", "none")


@register("distribution", citation="arXiv 2407.19126 Sec. 3.2, Eq. 1-4, Appendix B, Algorithm 2")
def make_distribution(
    mlp: str = "product", redundancy: str = "js", tau: float = 0.16, w1: str = "up",
    group_threshold: float | None = None, candidate_rate: float | None = None,
) -> Scorer:
    """mlp: product (paper, Appendix B) | output (ours: ||W_down[:, j]||^2 E[h_j^2]) | closed_form
    (one path, W1 = `w1`). redundancy: js (paper: Algorithm 2's candidates at `tau` go first) |
    cosine (ours: grouping by output similarity >= `group_threshold`) | none. A head's own
    score is its expected output power E||W_O^h z_h||^2 (ours; the paper ranks heads by
    redundancy only). candidate_rate (ours, with js): each layer's tau set so that this share of
    its heads become candidates (`tau_at_rate`; the paper's LLaMA-7B rate is 88 / 1024), instead
    of the fixed `tau`."""
    redundancy = "none" if redundancy is None else redundancy  # the CLI reads the word "none" as None
    if mlp not in MLP_SCORES:
        raise ValueError(f"distribution: mlp must be one of {MLP_SCORES}, got {mlp!r}")
    if redundancy not in REDUNDANCY:
        raise ValueError(f"distribution: redundancy must be one of {REDUNDANCY}, got {redundancy!r}")
    if w1 not in ("up", "gate"):
        raise ValueError(f"distribution: w1 must be 'up' or 'gate', got {w1!r}")
    if candidate_rate is not None and not (isinstance(candidate_rate, (int, float)) and 0.0 < candidate_rate < 1.0):
        raise ValueError(f"distribution: candidate_rate must be a share of heads in (0, 1), got {candidate_rate!r}")
    if candidate_rate is not None and redundancy != "js":
        raise ValueError("distribution: candidate_rate sets Algorithm 2's tau: it needs redundancy 'js'")
    if redundancy == "cosine" and group_threshold is None:
        raise ValueError("distribution: redundancy 'cosine' needs group_threshold (e.g. 0.2)")

    def scorer(weights: LayerWeights, stats: dict[str, torch.Tensor]) -> UnitScores:
        gram = head_output_gram(weights.o, stats["o_proj_in.second_moment"], weights.geometry.head_dim)
        if mlp == "product":
            neurons = gated_product_scores(weights.down, weights.up, weights.gate, stats["mlp_in.second_moment"])
        elif mlp == "output":
            neurons = mlp_output_power(weights.down, stats["down_proj_in.second_moment_diag"])
        else:
            neurons = mlp_closed_form(weights.down, getattr(weights, w1), stats["mlp_in.second_moment"])
        heads = gram.diagonal().clone()
        if redundancy == "js":
            if "attn_js.divergence" not in stats:
                raise ValueError("distribution: redundancy 'js' needs attention maps (rerun the calibrate stage)")
            divergence = stats["attn_js.divergence"]
            layer_tau = tau if candidate_rate is None else tau_at_rate(divergence, candidate_rate)
            heads = candidates_first(heads, redundancy_candidates(divergence, layer_tau))
        elif redundancy == "cosine":
            heads = grouped_head_scores(heads, head_similarity(gram), group_threshold)
        return UnitScores(heads, neurons)

    return scorer
