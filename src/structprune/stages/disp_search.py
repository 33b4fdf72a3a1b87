"""The disp-search stage: DISP-LLM's hypernetwork search on calibration text, then the checkpoint
whose layers read and write their own residual channels (pruning/dispsearch.py, channels.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from structprune.stages.argtypes import nonnegative_float, positive_float, positive_int, sparsity
from structprune.stages.common import layers_arg, load_model

log = logging.getLogger("structprune")

HELP = "DISP-LLM: learn each layer's residual channels with a hypernetwork (model frozen), then prune"


def arguments(parser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="calibration samples (data-calib): the search's text")
    parser.add_argument("--sparsity", type=sparsity, required=True, help="percent of decoder-block parameters removed")
    parser.add_argument("--layers", type=layers_arg, default="protocol", help="gated layers: protocol, all or START:END")
    parser.add_argument("--steps", type=positive_int, required=True, help="optimiser steps (the reference: 10000)")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="windows per step")
    parser.add_argument("--lam", type=nonnegative_float, default=16.0, help="budget weight (the code: 16; the paper: 6)")
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=positive_int, default=25, help="steps between saved search states")
    parser.add_argument("--state", default=None,
                        help="the resumable search state (default: <out>.search.pt beside the output; removed at the end)")
    parser.add_argument("--out", required=True)


def run(args) -> None:
    import resource
    import time

    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import load_tensors, save_checkpoint
    from structprune.model.geometry import channel_index_entries, count_parameters, decoder_layers, pruned_size
    from structprune.pruning.allocation import resolve_layer_range
    from structprune.pruning.channels import select_channels, stored_block_entries
    from structprune.pruning.dispsearch import SearchSettings, final_selections, search

    state = Path(args.state or f"{str(args.out).rstrip('/')}.search.pt")  # outside the output: a failed job keeps it
    samples = load_tensors(args.data)["input_ids"]
    model, tokenizer = load_model(args, args.model, "whole")  # the search runs where its activations are
    start, end = resolve_layer_range(args.layers, len(decoder_layers(model)))
    gated = list(range(start, end))
    settings = SearchSettings(keep=1 - args.sparsity, steps=args.steps, batch_size=args.batch_size, lam=args.lam,
                              lr=args.lr, seed=args.seed, save_every=args.save_every)
    began = time.perf_counter()
    hn, history = search(model, samples, gated, settings, state)
    selections, share = final_selections(hn, model, gated, settings.keep)
    seconds = time.perf_counter() - began
    before = count_parameters(model)
    pruned = select_channels(model, selections)
    after = count_parameters(pruned)
    size = pruned_size(before, after)
    stored = stored_block_entries(pruned)
    indices = channel_index_entries(pruned.config)  # counted in `after`: the checkpoint holds them
    log.info("DISP-LLM: kept %.4f of the block matrices (target %.4f) after %d steps in %.0f s (peak memory %.0f MB); "
             "the checkpoint's blocks hold %d entries with the %d channel indices", share, settings.keep, len(history),
             seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, stored, indices)
    # no wall time or memory in the manifest (identical runs write identical bytes): Snakemake's benchmark file has them
    manifest = build_manifest(
        "disp-search", {"model": args.model, "data": args.data},
        {"sparsity": args.sparsity, "layers": args.layers, "settings": settings.__dict__},
        {**size, "layer_range": [start, end], "kept_matrix_share": share, "stored_block_entries": stored,
         "index_entries": indices,
         "history": history, "selections": [s.residual_lists() + [list(s.neurons)] for s in selections]},
    )
    save_checkpoint(pruned.cpu(), tokenizer, args.out, manifest)
    state.unlink(missing_ok=True)

