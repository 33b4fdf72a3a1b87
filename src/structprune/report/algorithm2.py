"""How many heads the paper's Algorithm 2 makes removal candidates, for the table's note.

The paper sets tau = 0.16 and reports 88 of LLaMA-7B's 1024 heads as candidates (8.6 %). The
same tau on another model may make most heads candidates, so the head budget, not tau, then
decides which heads go (candidates first, docs/method.md): a reader needs the count to know
how much of the paper's criterion a row really applies (issue #29).
"""

from __future__ import annotations

from structprune.pruning.allocation import resolve_layer_range
from structprune.pruning.scores.distribution_paper import redundancy_candidates, tau_at_rate
from structprune.report.protocol import js_methods

PAPER_COUNT = (88, 1024)  # LLaMA-7B at tau 0.16 (arXiv 2407.19126, Sec. 3.2)


def candidate_count(divergences: list, layer_range: tuple[int, int], tau: float, rate: float | None = None) -> tuple[int, int]:
    """(candidates, heads) of Algorithm 2 at `tau` (or each layer's tau for the candidate `rate`)
    over the layers in [start, end); `divergences` holds each layer's (heads x heads)
    Jensen-Shannon divergence matrix."""
    start, end = layer_range
    candidates = sum(len(redundancy_candidates(divergences[i], tau if rate is None else tau_at_rate(divergences[i], rate)))
                     for i in range(start, end))
    return candidates, sum(int(divergences[i].shape[0]) for i in range(start, end))


def algorithm2_fact(config: dict, stats_paths: dict[str, str]) -> str | None:
    """The note's bullet: Algorithm 2's candidates per row on its calibration set's dense
    statistics, beside the paper's count; None when no row uses Algorithm 2."""
    from structprune.io.checkpoint import load_tensors

    parts = []
    for calib, rows in js_methods(config).items():
        if calib not in stats_paths:
            continue
        stats = load_tensors(stats_paths[calib])
        n_layers = 1 + max(int(key.split(".")[1]) for key in stats if key.startswith("layers."))
        divergences = [stats.get(f"layers.{i}.attn_js.divergence") for i in range(n_layers)]
        for label, tau, layers, rate in rows:
            layer_range = resolve_layer_range(layers, n_layers)
            if any(divergences[i] is None for i in range(*layer_range)):
                continue
            found, heads = candidate_count(divergences, layer_range, tau, rate)
            at = f"tau {tau:g}" if rate is None else f"each layer's tau for candidate_rate {rate:g}"
            parts.append(f"{label}: {found} of {heads} pruned-range heads at {at} on {calib} ({100 * found / heads:.0f} %)")
    if not parts:
        return None
    paper, total = PAPER_COUNT
    return ("Algorithm 2 (the paper's head redundancy) makes these heads removal candidates on the dense model's "
            f"statistics: {'; '.join(parts)}; the paper: {paper} of LLaMA-7B's {total} ({100 * paper / total:.1f} %). "
            "Candidates go first, then the head budget decides (docs/method.md): where most heads are candidates, the "
            "head choice falls back mostly to our head score (output power).")
