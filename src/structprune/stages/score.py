"""The score stage: an importance score per head and neuron of every layer."""

from __future__ import annotations

import logging

from structprune.stages.argtypes import (
    key_value,
)
from structprune.stages.common import (
    load_model,
    parse_options,
)

log = logging.getLogger("structprune")

HELP = "importance score per head and neuron"


def arguments(parser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--stats", default=None)
    parser.add_argument("--option", type=key_value, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", required=True)


def run(args) -> None:
    from structprune.io.checkpoint import load_tensors, save_tensors
    from structprune.pruning.scores import score_model

    options = parse_options(args.method, args.option)
    model, _ = load_model(args, args.model, "host")
    stats = load_tensors(args.stats) if args.stats else None
    scores = score_model(model, args.method, stats, options)
    save_tensors(scores, args.out, {"method": args.method, "options": options, "stats": args.stats})
    log.info("%s scores -> %s", args.method, args.out)
