"""The select stage: every candidate of a grid pruned; the lowest held-out calibration loss kept."""

from __future__ import annotations

import logging
from pathlib import Path

from structprune.stages.argtypes import (
    key_value,
    positive_int,
)
from structprune.stages.common import (
    checked_dense_stream,
    grid_value,
    load_model,
    recipe_arguments,
    recipe_from_args,
)

log = logging.getLogger("structprune")

HELP = "prune with each candidate of a grid; keep the lowest held-out calibration loss"


def arguments(parser) -> None:
    recipe_arguments(parser)
    parser.add_argument("--stats", default=None, help="dense calibration statistics (dense scores, bias compensation)")
    parser.add_argument("--data", default=None, help="calibration samples (sequential flow or refits)")
    parser.add_argument("--dense-stream", default=None, help="a dense-stream folder of --model on --data: refits read it instead of running the dense layers")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--grid", type=key_value, action="append", default=[], metavar="CHOICE=V1,V2",
                   help="alternatives for a recipe choice (or options.NAME); every combination is a candidate")
    parser.add_argument("--heldout", required=True, help="held-out calibration samples (never evaluation data)")
    parser.add_argument("--chosen-in", default=None, metavar="CHECKPOINT",
                   help="a select checkpoint of the same method at another sparsity: run only the candidate chosen there")
    parser.add_argument("--rechoose", action="append", default=[], metavar="KEY",
                   help="with --chosen-in: a grid key chosen again here among all its values (repeatable)")
    parser.add_argument("--out", required=True)


def run(args) -> None:
    """Prune with every candidate of a grid and keep the lowest held-out loss (selection.py)."""
    import torch

    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import load_tensors, save_checkpoint
    from structprune.model.geometry import count_parameters, pruned_size
    from structprune.pruning.selection import NoRunnableCandidate, chosen_grid, select_recipe

    torch.manual_seed(0)
    base = recipe_from_args(args)
    grid = {key: [grid_value(v) for v in values.split(",")] for key, values in args.grid}
    from structprune.spec.configcheck import grid_problems

    if problems := grid_problems(base.score, grid):
        raise ValueError("--" + "; --".join(problems))
    full_grid, chosen_at = grid, args.sparsity
    if args.chosen_in:
        grid, chosen_at = chosen_grid(args.chosen_in, base, grid, args.rechoose)
    elif args.rechoose:
        raise ValueError("--rechoose needs --chosen-in (the checkpoint whose other choices it keeps)")
    if not Path(args.heldout).is_file():
        raise FileNotFoundError(f"held-out samples {args.heldout!r} not found: run data-calib for the held-out set first")
    dense_stream = checked_dense_stream(args, True)
    model, tokenizer = load_model(args, args.model, "layerwise")
    stats = load_tensors(args.stats) if args.stats else None
    samples = load_tensors(args.data)["input_ids"] if args.data else None
    heldout = load_tensors(args.heldout)["input_ids"]
    before = count_parameters(model)
    rechoose = list(args.rechoose)

    def choose(grid):
        return select_recipe(model, base, grid, args.sparsity, heldout=heldout, samples=samples, stats=stats,
                             batch_size=args.batch_size, dense_stream=dense_stream)

    try:
        result, chosen_index, candidates = choose(grid)
    except NoRunnableCandidate as error:
        if not args.chosen_in:
            raise
        # the choice made at another sparsity cannot run here (a budget split that this sparsity
        # exhausts): every key is chosen again, on the same held-out text, and the manifest says so
        log.warning("the choice made at %.0f %% cannot run at %.0f %% (%s): choosing every key again",
                    100 * chosen_at, 100 * args.sparsity, error)
        rechoose = list(full_grid)
        result, chosen_index, candidates = choose(full_grid)
    chosen = candidates[chosen_index].recipe
    log.info("chosen: %s (held-out loss %.4f)", candidates[chosen_index].overrides, candidates[chosen_index].heldout_loss)
    inputs = {k: v for k, v in {"model": args.model, "stats": args.stats, "data": args.data, "heldout": args.heldout,
                                "chosen_in": args.chosen_in, "dense_stream": dense_stream}.items() if v}
    manifest = build_manifest(
        "select", inputs, {"sparsity": args.sparsity, "base_recipe": base.to_json(),
                           "grid": full_grid, "chosen_at": chosen_at, **({"rechoose": rechoose} if args.chosen_in else {})},
        {
            **pruned_size(before, count_parameters(result.model)), "recipe": chosen.to_json(),
            "candidates": [c.to_json(i == chosen_index) for i, c in enumerate(candidates)],
            "heldout_samples": list(heldout.shape), "plan": result.plan.to_json(), "layers": result.reports,
            **result.notes,
        },
    )
    save_checkpoint(result.model.cpu(), tokenizer, args.out, manifest)

