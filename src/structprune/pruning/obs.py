"""SlimGPT's structured Optimal Brain Surgeon (Ling et al., NeurIPS 2024, Sec. 3), as pure
functions on one linear map's weight and the Gram matrix of its input.

SlimGPT removes input columns of o_proj (whole heads) and down_proj (MLP channels) and
updates the remaining columns so the map's output on the calibration inputs changes least.
Its reference (`slimgpt_pub/slim_utils/slimgpt.py`, `struct_prune`) works on
H = (2 / N) sum x x^T with `percdamp` x mean(diag H) added, and repeats: rank the remaining
column groups by the OBS error sum_rows W[:, q]^2 / [H^-1]_qq (a head's columns with the
squared Cholesky diagonal of its block of H^-1, its "grouped Cholesky"), remove the cheapest
group (one head; or the `cnt` cheapest MLP columns, its "dynamic group size"), and
compensate the kept columns by the OBS update, H^-1 then restricted to them.

The OBS update of a set of columns equals the least-squares refit of the kept columns to
the map's output in the H-weighted norm, and successive updates compose to the refit of the
original weight on the final kept set (nested projections). So `compensated` computes the
result in closed form, and the greedy loops recompute W and H^-1 exactly at every step
instead of carrying the reference's float32 running updates: the same quantities, without
their accumulated rounding.
"""

from __future__ import annotations

import torch

PERCDAMP = 0.01  # the reference's default (`--percdamp`); its README's LLaMA run sets 0


def hessian(gram: torch.Tensor, count: int, percdamp: float = PERCDAMP) -> torch.Tensor:
    """H = (2 / N) X X^T in float64, a dead input (zero diagonal) given a unit diagonal as
    in the reference, plus `percdamp` x its mean diagonal on the diagonal."""
    h = gram.to(torch.float64) * (2.0 / max(count, 1))
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    if percdamp > 0:
        h += percdamp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    return h


def inverse_hessian(h: torch.Tensor) -> torch.Tensor:
    """H^-1 from its Cholesky factor (H is symmetric positive definite once damped)."""
    return torch.cholesky_inverse(torch.linalg.cholesky(h))


def compensated(weight: torch.Tensor, h: torch.Tensor, keep: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
    """The kept columns `keep` of `weight` (out x in) after removing all others with the OBS
    update: W H[:, K] H[K, K]^-1, the least-squares fit of W x by the kept inputs (out x |K|).
    `factor`: the Cholesky factor of H[K, K], when the caller has it already."""
    w = weight.to(torch.float64)
    factor = torch.linalg.cholesky(h[keep][:, keep]) if factor is None else factor
    return torch.cholesky_solve((w @ h[:, keep]).T, factor).T


def _state(weight: torch.Tensor, h: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The compensated weight on `keep` and the inverse of H restricted to `keep`, from one
    Cholesky factorisation of H[K, K]."""
    factor = torch.linalg.cholesky(h[keep][:, keep])
    return compensated(weight, h, keep, factor), torch.cholesky_inverse(factor)


def column_errors(w: torch.Tensor, hinv: torch.Tensor, width: int = 1) -> torch.Tensor:
    """OBS error of each column, sum_rows w^2 / d with d the inverse Hessian's diagonal
    (width 1), or for consecutive groups of `width` columns the squared diagonal of the
    Cholesky factor of each group's diagonal block (the reference's grouped Cholesky)."""
    if width == 1:
        d = hinv.diagonal()
    else:
        n = hinv.shape[0] // width
        blocks = torch.stack([hinv[i * width:(i + 1) * width, i * width:(i + 1) * width] for i in range(n)])
        d = torch.linalg.cholesky(blocks).diagonal(dim1=-2, dim2=-1).reshape(-1).pow(2)
    return (w.pow(2) / d.unsqueeze(0)).sum(0)


def greedy_groups(weight: torch.Tensor, h: torch.Tensor, groups: list[list[int]], quota: dict[int, int],
                  group_of: list[int], width: int) -> list[int]:
    """SlimGPT's head loop: remove one group of columns (a head, or a whole kv group) per step,
    the one with the lowest summed OBS error at the current compensated state, until each
    family f has lost quota[f] groups (`group_of[g]`: group g's family: its kv group under
    within_kv_groups, one family otherwise). Returns the removed groups in order."""
    removed: list[int] = []
    left = dict(quota)
    while any(left.values()):
        alive = [g for g in range(len(groups)) if g not in removed]
        keep = torch.tensor([c for g in alive for c in groups[g]], dtype=torch.long)
        w, hinv = _state(weight, h, keep)
        errors = column_errors(w, hinv, width).reshape(len(alive), -1).sum(1)
        candidates = [i for i, g in enumerate(alive) if left.get(group_of[g], 0) > 0]
        best = min(candidates, key=lambda i: (float(errors[i]), alive[i]))
        removed.append(alive[best])
        left[group_of[alive[best]]] -= 1
    return removed


def dynamic_group_sizes(target: int) -> list[int]:
    """How many MLP columns each step of the reference removes: first (target - 512) // 2,
    then (previous - 512) // 2, each at least 64 and at most 1024, until `target` are gone."""
    sizes, block = [], (target - 512) // 2
    while sum(sizes) < target:
        sizes.append(min(target - sum(sizes), max(block, 64), 1024))
        block = (block - 512) // 2
    return sizes


def greedy_columns(weight: torch.Tensor, h: torch.Tensor, remove: int) -> list[int]:
    """SlimGPT's MLP loop: remove the `size` lowest-error columns at the current compensated
    state, for each size of `dynamic_group_sizes(remove)`. Returns the removed columns."""
    removed: list[int] = []
    for size in dynamic_group_sizes(remove):
        gone = set(removed)
        alive = [c for c in range(weight.shape[1]) if c not in gone]
        w, hinv = _state(weight, h, torch.tensor(alive, dtype=torch.long))
        errors = column_errors(w, hinv)
        order = sorted(range(len(alive)), key=lambda i: (float(errors[i]), alive[i]))
        removed += [alive[i] for i in order[:size]]
    return removed


def obs_heads(o_weight: torch.Tensor, h: torch.Tensor, geometry, remove: int, mode: str) -> tuple[list[int], list[int]]:
    """Kept query heads and kv heads when SlimGPT's head loop removes `remove` units of `mode`
    (units.py): one query head of each kv group per unit (the loop picks among the groups that
    still owe heads), or whole kv groups, a group's columns ranked as one block (ours: the
    reference has no grouped-query attention)."""
    from structprune.pruning.units import effective_head_mode

    mode, d, per_kv = effective_head_mode(geometry, mode), geometry.head_dim, geometry.heads_per_kv
    if mode == "within_kv_groups":
        groups = [list(range(q * d, (q + 1) * d)) for q in range(geometry.num_heads)]
        removed = greedy_groups(o_weight, h, groups, {kv: min(remove, per_kv - 1) for kv in range(geometry.num_kv_heads)},
                                [q // per_kv for q in range(geometry.num_heads)], d)
        return [q for q in range(geometry.num_heads) if q not in removed], list(range(geometry.num_kv_heads))
    width = d * per_kv
    groups = [list(range(kv * width, (kv + 1) * width)) for kv in range(geometry.num_kv_heads)]
    removed_kv = greedy_groups(o_weight, h, groups, {0: min(remove, geometry.num_kv_heads - 1)}, [0] * len(groups), width)
    kept_kv = [kv for kv in range(geometry.num_kv_heads) if kv not in removed_kv]
    return [q for q in range(geometry.num_heads) if q // per_kv in kept_kv], kept_kv
