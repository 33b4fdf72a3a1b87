"""The data-calib stage: calibration samples from text windows, self-generated text or random ids."""

from __future__ import annotations

import logging

from structprune.stages.common import (
    data_arguments,
    sample_arguments,
    self_generated_samples,
    split_tokens,
)

log = logging.getLogger("structprune")

HELP = "calibration samples: windows of a text split, self-generated text (selfgen) or random token ids (random)"


def arguments(parser) -> None:
    data_arguments(parser)
    sample_arguments(parser)


def run(args) -> None:
    from structprune.io.checkpoint import save_tensors

    meta = {"dataset": args.dataset, "n_samples": args.n_samples, "seq_len": args.seq_len, "seed": args.seed}
    if args.dataset == "selfgen":
        samples = self_generated_samples(args, meta)
    elif args.dataset == "random":
        from transformers import AutoConfig

        from structprune.data.text import random_token_samples

        vocab_size = AutoConfig.from_pretrained(args.tokenizer).vocab_size
        samples = random_token_samples(vocab_size, args.n_samples, args.seq_len, args.seed)
        meta.update(source="uniform random token ids", vocab_size=vocab_size)
    else:
        from structprune.data.text import sample_windows

        stream, mirror = split_tokens(args)
        samples = sample_windows(stream, args.n_samples, args.seq_len, args.seed)
        meta.update(split=args.split, source=mirror or "hub")
    save_tensors({"input_ids": samples}, args.out, meta)
    log.info("calibration set %s: %s", args.out, tuple(samples.shape))
