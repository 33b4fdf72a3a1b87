"""Which blocks a width method prunes and at what ratio: arithmetic only, standard library.

The allocation (pruning/allocation.py) cuts by these numbers; the config check
(spec/modelcheck.py) reads the same ones to refuse, before any job, a sparsity that a
schedule cannot reach on a built model (SlimGPT's increasing ratio with MLP neurons alone
at 50 % would otherwise fail in the prune job, after the jobs before it ran).
"""

from __future__ import annotations

import math

MAX_LAYER_RATIO = 0.95  # a pruned layer keeps at least 5 % of its block parameters


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def default_layer_range(n_layers: int) -> tuple[int, int]:
    """[4, L-2): LLM-Pruner's and the paper's range (LLaMA-7B: blocks 4..29 of 32).

    Models too shallow to spare six blocks and still prune half of them (L < 12) spare
    the same proportion instead, round(L/8) first and round(L/16) last blocks.
    """
    if n_layers >= 12:
        return 4, n_layers - 2
    return round_half_up(n_layers / 8), n_layers - round_half_up(n_layers / 16)


def resolve_layer_range(layers, n_layers: int) -> tuple[int, int]:
    """`layers`: "protocol" (the default range), "all", or [start, end)."""
    if layers in (None, "protocol"):
        return default_layer_range(n_layers)
    if layers == "all":
        return 0, n_layers
    start, end = (int(v) for v in layers)
    if not 0 <= start < end <= n_layers:
        raise ValueError(f"layer range [{start}, {end}) is outside the model's {n_layers} layers")
    return start, end


def increasing_ratios(n_layers: int, ratio: float) -> list[float]:
    """SlimGPT's log-increasing per-layer ratios over `n_layers` pruned layers, averaging `ratio`
    (pruning/allocation.py's docstring); one layer takes the ratio itself."""
    if n_layers <= 1:
        return [ratio] * n_layers
    shape = [0.25 + 0.75 * math.log(1 + k) / math.log(n_layers) for k in range(n_layers)]
    top = ratio * n_layers / sum(shape)
    return [top * s for s in shape]


def mlp_only_neurons(ratio: float, block_params: int, neuron_params: int) -> int:
    """Neurons a layer loses when they alone carry `ratio` of its block parameters (rounded half up)."""
    return round_half_up(ratio * block_params / neuron_params)


def schedule_problem(allocation: str, budget: str, ratio: float, n_pruned: int, block_params: int,
                     neuron_params: int, intermediate: int) -> str | None:
    """Why layers of equal widths cannot lose `ratio` of their block parameters on average under
    `allocation` and `budget` (None when they can): a layer past MAX_LAYER_RATIO, SlimGPT's last
    layer past all of it, or MLP neurons alone past the MLP's width. The searched allocation
    runs wherever the uniform one does (the uniform ratio is one of its levels)."""
    if ratio >= MAX_LAYER_RATIO:
        return f"needs removing {ratio:.0%} of each pruned layer; widen the layer range or lower the sparsity"
    top = increasing_ratios(n_pruned, ratio)[-1] if allocation == "increasing" else ratio
    if top >= 1:
        return (f"the increasing schedule would remove {100 * top:.0f} % of the last pruned layer: use allocation "
                "uniform or a lower sparsity")
    if budget == "mlp_only" and mlp_only_neurons(top, block_params, neuron_params) >= intermediate:
        where = "the last pruned layer's" if allocation == "increasing" else "each pruned layer's"
        return (f"budget 'mlp_only' would remove every MLP neuron ({where} ratio {top:.0%}); use budget 'matched' "
                "(heads too), another allocation or a lower sparsity")
    return None
