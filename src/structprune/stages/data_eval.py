"""The data-eval stage: an evaluation split tokenised into one stream."""

from __future__ import annotations

import logging

from structprune.stages.common import (
    data_arguments,
    data_mirror,
)

log = logging.getLogger("structprune")

HELP = "tokenise an evaluation split into one stream"


def arguments(parser) -> None:
    data_arguments(parser)


def run(args) -> None:
    from transformers import AutoTokenizer

    from structprune.data.text import load_text, tokenize_text
    from structprune.io.checkpoint import save_tensors

    mirror = data_mirror(args)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    text = load_text(args.dataset, args.split, mirror)
    stream = tokenize_text(tokenizer, text)
    log.info("%s/%s: %d characters, %d tokens", args.dataset, args.split, len(text), stream.numel())
    meta = {"dataset": args.dataset, "split": args.split, "source": mirror or "hub", "tokens": stream.numel()}
    save_tensors({"input_ids": stream}, args.out, meta)
