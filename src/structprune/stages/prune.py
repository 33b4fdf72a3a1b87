"""The prune stage: one method recipe, score x unit x allocation x flow x reconstruction."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from structprune.stages.argtypes import (
    positive_int,
)
from structprune.stages.common import (
    checked_dense_stream,
    load_model,
    recipe_arguments,
    recipe_from_args,
)

log = logging.getLogger("structprune")

HELP = "prune with one method recipe: score x unit x allocation x flow x reconstruction"


def arguments(parser) -> None:
    recipe_arguments(parser)
    parser.add_argument("--scores", default=None, help="dense scores (score stage)")
    parser.add_argument("--stats", default=None, help="dense calibration statistics (bias compensation, dense flow)")
    parser.add_argument("--data", default=None, help="calibration samples (sequential flow or refits)")
    parser.add_argument("--dense-stream", default=None, help="a dense-stream folder of --model on --data: refits read it instead of running the dense layers")
    parser.add_argument("--order", default=None, help="a greedy depth criterion's full order (depth-order stage), "
                        "read instead of searching: the same removal")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--out", required=True)


def run(args) -> None:
    import torch

    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import load_tensors, save_checkpoint
    from structprune.model.geometry import count_parameters, pruned_size
    from structprune.pruning.engine import check_recipe, prune_with_recipe
    from structprune.pruning.scores import score_method

    torch.manual_seed(0)
    recipe = recipe_from_args(args)
    if recipe.unit == "width":
        score_method(recipe.score).make(**recipe.options)  # a bad option fails here, before any loading
    check_recipe(recipe, args.scores or None, args.stats or None, args.data or None)
    _check_scores_file(args.scores, recipe.score, recipe.options)
    dense_stream = checked_dense_stream(args, recipe.refits)  # a mismatched cache fails before loading
    model, tokenizer = load_model(args, args.model, "layerwise" if recipe.needs_samples else "host")
    scores = load_tensors(args.scores) if args.scores else None
    depth_order = _read_order(args.order, recipe.score, {"model": args.model, "data": args.data}) if args.order else None
    stats = load_tensors(args.stats) if args.stats else None
    samples = load_tensors(args.data)["input_ids"] if args.data else None
    before = count_parameters(model)
    result = prune_with_recipe(model, recipe, args.sparsity, scores=scores, stats=stats, samples=samples,
                               batch_size=args.batch_size, dense_stream=dense_stream, depth_order=depth_order)
    model = result.model
    after = count_parameters(model)
    size = pruned_size(before, after)
    log.info(
        "target sparsity %.3f of %s parameters over layers [%d, %d) (per-layer ratio %.4f); removed %.4f of "
        "decoder-block parameters (%d -> %d), %.4f of all (%d -> %d)",
        args.sparsity, recipe.sparsity_of, *result.layer_range, result.ratio, size["achieved_block_sparsity"],
        before["decoder_blocks"], after["decoder_blocks"], size["achieved_total_sparsity"], before["total"], after["total"],
    )
    inputs = {k: v for k, v in {"model": args.model, "scores": args.scores, "stats": args.stats, "data": args.data,
                                "dense_stream": dense_stream, "order": args.order}.items() if v}
    manifest = build_manifest(
        "prune", inputs, {"sparsity": args.sparsity, "recipe": recipe.to_json(), "batch_size": args.batch_size},
        {
            **size,
            "layer_range": list(result.layer_range), "layer_ratio": result.ratio,
            "budgets": [[b.heads, b.neurons] for b in result.budgets],
            "plan": result.plan.to_json(), "layers": result.reports,
            **result.notes,
        },
    )
    save_checkpoint(model.cpu(), tokenizer, args.out, manifest)


def _check_scores_file(path: str | None, score: str, options: dict) -> None:
    """--scores must be the scores of this job's method and options (another method's file
    would prune by the wrong ranking without a word)."""
    if not path:
        return
    if not Path(path).is_file():
        raise FileNotFoundError(f"--scores {path} does not exist: run the score stage first")
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("structprune", "{}"))
    if meta.get("method") != score or meta.get("options", {}) != json.loads(json.dumps(options)):
        raise ValueError(f"--scores {path} holds scores of method {meta.get('method')!r} with options "
                         f"{meta.get('options')}, not this job's {score!r} with {options}: pass the matching scores file")


def _read_order(path: str, score: str, inputs: dict) -> dict:
    """--order must be a depth-order file of this job's criterion, searched on this job's model
    and calibration samples (the engine checks its layer range)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--order {path} does not exist: run the depth-order stage first")
    order = json.loads(Path(path).read_text())
    if order.get("stage") != "depth-order" or order.get("criterion") != score:
        raise ValueError(f"--order {path} is not a depth-order file of {score!r} (it holds {order.get('criterion')!r}): "
                         f"pass the order the depth-order stage made for this method, or leave --order out to search")
    from structprune.io.artifacts import sha256_path

    for name, given in inputs.items():
        made_on = order.get("inputs", {}).get(name, {})
        if given and made_on.get("sha256") != sha256_path(given):
            raise ValueError(f"--order {path} was searched on another {name} ({made_on.get('path')}) than this job's "
                             f"{given}: pass the order made on this {name}, or leave --order out to search")
    return order
