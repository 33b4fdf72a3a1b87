"""The gradients stage: LLM-Pruner's Taylor saliencies per channel (backprop)."""

from __future__ import annotations

import logging
import time

from structprune.stages.common import (
    load_model,
)

log = logging.getLogger("structprune")

HELP = "LLM-Pruner's Taylor saliencies per channel (backprop)"


def arguments(parser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="calibration samples (data-calib output)")
    parser.add_argument("--out", required=True)


def run(args) -> None:
    import torch

    from structprune.io.checkpoint import load_tensors, save_tensors
    from structprune.pruning.scores.taylor import taylor_statistics

    torch.manual_seed(0)
    started = time.time()
    model, _ = load_model(args, args.model, "whole")
    input_ids = load_tensors(args.data)["input_ids"]
    stats = taylor_statistics(model, input_ids)
    meta = {"samples": int(input_ids.shape[0]), "seq_len": int(input_ids.shape[1]),
            "statistics": "gradients"}
    save_tensors(stats, args.out, meta, timing={"wall_time_s": round(time.time() - started, 3)})
    log.info("Taylor saliencies over %s tokens -> %s", tuple(input_ids.shape), args.out)
