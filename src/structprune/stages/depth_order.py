"""The depth-order stage: a greedy depth criterion's full removal order (SLEB's blocks,
BlockPruner's sublayers) on calibration text, searched once; every sparsity's prune job reads
the prefix it needs (pruning/depth.py `greedy_order`)."""

from __future__ import annotations

import logging

from structprune.stages.argtypes import positive_int
from structprune.stages.common import layers_arg, load_model

log = logging.getLogger("structprune")

HELP = "SLEB / BlockPruner: the full greedy removal order, searched once for every sparsity"


def arguments(parser) -> None:
    from structprune.spec.catalog import GREEDY_DEPTH_SCORES

    parser.add_argument("--model", required=True)
    parser.add_argument("--method", required=True, choices=GREEDY_DEPTH_SCORES)
    parser.add_argument("--data", required=True, help="calibration samples (data-calib): the trials' text")
    parser.add_argument("--layers", type=layers_arg, default="protocol", help="candidate blocks: protocol, all or START:END")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--out", required=True, help="the order (JSON)")


def run(args) -> None:
    import torch

    from structprune.io.artifacts import build_manifest, write_json
    from structprune.io.checkpoint import load_tensors
    from structprune.model.geometry import decoder_layers
    from structprune.pruning.allocation import resolve_layer_range
    from structprune.pruning.depth import greedy_order

    torch.manual_seed(0)
    samples = load_tensors(args.data)["input_ids"]
    model, _ = load_model(args, args.model, "layerwise")
    start, end = resolve_layer_range(args.layers, len(decoder_layers(model)))
    order = greedy_order(model, args.method, list(range(start, end)), samples, args.batch_size)
    log.info("%s order over layers [%d, %d): %s", args.method, start, end, order["order"])
    write_json(args.out, {**build_manifest("depth-order", {"model": args.model, "data": args.data},
                                           {"layers": args.layers, "batch_size": args.batch_size}), **order})
