"""Width plus depth (ours, `depth_share`): whole blocks first, then the width cut on the rest.

Depth removes whole blocks, which llama.cpp runs fastest at a given size; width keeps every
block and loses less quality at low sparsity (config/frontier.yaml). A width recipe with
`depth_share` s > 0 does both, and its select grid lets held-out text say how much of each:

1. blocks: ShortGPT's Block Influence (1 - the cosine between a block's input and output
   residual stream, on the dense model and the method's calibration samples) ranks the blocks of
   the pruned range; the lowest go until their parameters are nearest s x the target
   (`blocks_to_drop`, with depth.py's ShortGPT);
2. width: the rest of the target is spread over the pruned range's remaining blocks, at one
   ratio or SlimGPT's increasing one (`width_ratios`), and the engine's loop cuts them. Its
   refits aim at the *dense* model's stream: the dense stream runs a dropped block, the pruned
   stream skips it, so the next block's refit (target: block) also makes up for what the
   dropped block added, where it can.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from structprune.calibration.streams import capture_layer_inputs
from structprune.model.geometry import LayerGeometry, count_parameters, decoder_layers
from structprune.pruning.depth import block_influence, block_parameters, enough_blocks
from structprune.spec.layerratios import MAX_LAYER_RATIO, increasing_ratios, resolve_layer_range

log = logging.getLogger(__name__)


def blocks_to_drop(model: nn.Module, recipe, sparsity: float, samples: torch.Tensor,
                   batch_size: int) -> tuple[list[int], dict]:
    """The blocks of the recipe's range whose parameters come nearest `depth_share` of the
    target, lowest Block Influence first (ascending), and a report of the choice."""
    layers = decoder_layers(model)
    start, end = resolve_layer_range(recipe.layers, len(layers))
    total = count_parameters(model)["decoder_blocks" if recipe.sparsity_of == "blocks" else "total"]
    target = recipe.depth_share * sparsity * total
    scores = block_influence(model, capture_layer_inputs(model, samples, batch_size))
    ranked = sorted(range(start, end), key=lambda i: (float(scores[i]), i))
    sizes = [block_parameters(layer) for layer in layers]
    dropped = enough_blocks(sizes, ranked, target)
    log.info("depth share %.2f: dropping blocks %s (block influence)", recipe.depth_share, dropped)
    return sorted(dropped), {"criterion": "block_influence", "depth_share": recipe.depth_share,
                             "dropped_blocks": dropped, "dropped_params": sum(sizes[i] for i in dropped),
                             "block_influence": [round(float(s), 6) for s in scores]}


def width_ratios(geometries: list[LayerGeometry], ratio: float, layer_range: tuple[int, int],
                 dropped: list[int], allocation: str) -> list[float]:
    """Per layer of the range, the width ratio once `dropped` are gone (0 for them): the range's
    target (`ratio` of its block parameters) less the dropped blocks, over the blocks left."""
    start, end = layer_range
    kept = [i for i in range(start, end) if i not in set(dropped)]
    if not kept:
        raise ValueError("depth_share dropped every block of the pruned range: lower depth_share or the sparsity")
    left = ratio * sum(g.block_params for g in geometries[start:end]) - sum(geometries[i].block_params for i in dropped)
    kept_ratio = max(0.0, left / sum(geometries[i].block_params for i in kept))
    if kept_ratio >= MAX_LAYER_RATIO:
        raise ValueError(f"after the dropped blocks each remaining layer would lose {kept_ratio:.0%}: lower the sparsity")
    per_kept = increasing_ratios(len(kept), kept_ratio) if allocation == "increasing" else [kept_ratio] * len(kept)
    if max(per_kept) >= 1:
        raise ValueError(f"the increasing schedule would remove {100 * max(per_kept):.0f} % of the last layer left: "
                         "use allocation uniform or a lower sparsity")
    by_layer = dict(zip(kept, per_kept, strict=True))
    return [by_layer.get(i, 0.0) for i in range(start, end)]
