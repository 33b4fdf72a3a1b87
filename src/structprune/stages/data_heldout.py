"""The data-heldout stage: held-out calibration samples apart from the fit sets (for select)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from structprune.stages.common import (
    data_arguments,
    sample_arguments,
    self_generated_samples,
    split_tokens,
)

log = logging.getLogger("structprune")

HELP = "held-out calibration samples apart from the fit sets (for select)"


def arguments(parser) -> None:
    data_arguments(parser)
    sample_arguments(parser)
    parser.add_argument("--exclude", nargs="+", required=True, help="the fit sets' sample files, whose windows are avoided")


def run(args) -> None:
    """Held-out calibration samples for `select`: windows of the fit sets' text that none of
    their windows covers (heldout.py), or, for self-generated fit sets, fresh generations
    under another seed. Never evaluation data."""
    from safetensors import safe_open

    from structprune.io.checkpoint import load_tensors, save_tensors

    fit_meta = []
    for path in args.exclude:
        if not Path(path).is_file():
            raise FileNotFoundError(f"fit set {path} not found: run data-calib for it first")
        with safe_open(path, "pt") as handle:
            fit_meta.append(json.loads((handle.metadata() or {}).get("structprune", "{}")))
    meta = {"dataset": args.dataset, "n_samples": args.n_samples, "seq_len": args.seq_len, "seed": args.seed,
            "heldout_from": [str(p) for p in args.exclude]}
    if args.dataset == "selfgen":
        seeds = {m.get("seed") for m in fit_meta}
        if args.seed in seeds:
            raise ValueError(f"held-out seed {args.seed} is a fit set's seed: its samples would repeat; pick another")
        samples = self_generated_samples(args, meta)
    else:
        from structprune.data.heldout import heldout_windows

        stream, mirror = split_tokens(args)
        fits = [load_tensors(path)["input_ids"] for path in args.exclude]
        samples, starts = heldout_windows(stream, fits, args.n_samples, args.seq_len, args.seed)
        meta.update(split=args.split, source=mirror or "hub", starts=starts)
    save_tensors({"input_ids": samples}, args.out, meta)
    log.info("held-out set %s: %s, apart from %s", args.out, tuple(samples.shape), args.exclude)
