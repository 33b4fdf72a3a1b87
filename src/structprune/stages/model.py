"""The model stage: a model source (GGUF, a Hugging Face folder) as a safetensors checkpoint."""

from __future__ import annotations

import logging

from structprune.stages.common import (
    device_and_dtype,
)

log = logging.getLogger("structprune")

HELP = "materialise a model source as a safetensors checkpoint"


def arguments(parser) -> None:
    parser.add_argument("--source", required=True)
    parser.add_argument("--out", required=True)


def run(args) -> None:
    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import save_checkpoint
    from structprune.model.loading import load_source

    log.info("loading model source %s", args.source)
    model, tokenizer = load_source(args.source, device_and_dtype(args)[1])
    manifest = build_manifest("model", {}, {"source": args.source})
    save_checkpoint(model, tokenizer, args.out, manifest)
    log.info("wrote %s", args.out)
