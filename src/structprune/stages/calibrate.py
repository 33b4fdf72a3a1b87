"""The calibrate stage: per-layer activation statistics in float64."""

from __future__ import annotations

import logging
import time

from structprune.spec.catalog import FULL_SITE_NAMES
from structprune.stages.argtypes import (
    positive_int,
)
from structprune.stages.common import (
    load_model,
)

log = logging.getLogger("structprune")

HELP = "per-layer activation statistics (float64)"


def arguments(parser) -> None:
    
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--full-sites", nargs="*", default=None, choices=FULL_SITE_NAMES,
                   help="sites whose full second moment is kept (default: all three; the others keep the diagonal)")
    parser.add_argument("--no-attention-js", dest="attention_js", action="store_false",
                   help="skip the heads' attention divergences (the paper's redundancy is the only reader)")
    parser.add_argument("--out", required=True)


def run(args) -> None:
    import torch

    from structprune.calibration.statistics import collect_statistics
    from structprune.io.checkpoint import load_tensors, save_tensors

    torch.manual_seed(0)
    started = time.time()
    model, _ = load_model(args, args.model, "layerwise")
    input_ids = load_tensors(args.data)["input_ids"]
    from structprune.spec.recipe import StatisticsNeeds

    needs = StatisticsNeeds(frozenset(FULL_SITE_NAMES if args.full_sites is None else args.full_sites), args.attention_js)
    stats, tokens = collect_statistics(model, input_ids, args.batch_size, needs=needs)
    meta = {
        "tokens": tokens, "samples": int(input_ids.shape[0]), "seq_len": int(input_ids.shape[1]),
        "dtype": "float64",
        "full_sites": sorted(needs.full_sites), "attention_js": needs.attention_js,
    }
    save_tensors(stats, args.out, meta, timing={"wall_time_s": round(time.time() - started, 3)})
    log.info("statistics over %d tokens -> %s", tokens, args.out)
