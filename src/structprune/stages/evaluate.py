"""The evaluate stage: perplexity and zero-shot accuracy of a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

from structprune.spec.catalog import EVALUATED_STAGES, PERPLEXITY_WINDOWS, TASK_ITEMS
from structprune.stages.argtypes import (
    key_path,
    nonnegative_int,
    positive_int,
    seed,
)
from structprune.stages.common import (
    Timer,
    check_model_limits,
    load_model,
)

log = logging.getLogger("structprune")

HELP = "perplexity and zero-shot accuracy of a checkpoint"


def arguments(parser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--ppl", type=key_path, action="append", default=[], metavar="DATASET=TOKENS")
    parser.add_argument("--task", type=key_path, action="append", default=[], metavar="TASK=JSONL")
    parser.add_argument("--seq-len", type=positive_int, default=128)
    parser.add_argument("--max-tokens", type=positive_int, default=None)
    parser.add_argument("--windows", choices=PERPLEXITY_WINDOWS, default="first",
                        help="which max_tokens // seq_len windows: the first, or evenly spaced over the split")
    parser.add_argument("--limit", type=positive_int, default=None)
    parser.add_argument("--items", choices=TASK_ITEMS, default="first",
                        help="which --limit items per task: the first, or a seeded random sample")
    parser.add_argument("--items-seed", type=seed, default=0, help="seed of --items random (with the task name)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--method", default="dense")
    parser.add_argument("--calib", default="none")
    parser.add_argument("--sparsity", type=nonnegative_int, default=0)
    parser.add_argument("--stage", default="dense", choices=EVALUATED_STAGES)
    parser.add_argument("--out", required=True)


def run(args) -> None:
    import torch

    from structprune.evaluation.perplexity import perplexity
    from structprune.evaluation.zeroshot import zero_shot
    from structprune.io.artifacts import write_stage_json
    from structprune.io.checkpoint import load_tensors
    from structprune.model.geometry import count_parameters

    missing = [path for _, path in args.ppl + args.task if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"evaluation data missing: {missing}; run the data stage first")
    from structprune.io.integrity import require_recorded_hash

    for _, path in args.task:  # the token streams are checked as they load
        require_recorded_hash(path)
    torch.manual_seed(0)
    model, tokenizer = load_model(args, args.model, "whole")
    check_model_limits(model.config, args.seq_len)
    result = {
        "model": args.model_name, "method": args.method, "calib": args.calib,
        "sparsity": args.sparsity, "stage": args.stage, "checkpoint": args.model,
        "parameters": count_parameters(model),
        "protocol": {"seq_len": args.seq_len, "max_tokens": args.max_tokens, "windows": args.windows,
                     "limit": args.limit, "items": args.items, "items_seed": args.items_seed},
        "perplexity": {}, "zero_shot": {}, "timing": {},
    }
    timer = Timer()
    for name, path in args.ppl:
        result["perplexity"][name] = perplexity(
            model, load_tensors(path)["input_ids"], args.seq_len, args.max_tokens, args.batch_size,
            placement=args.windows,
        )
        log.info("%s perplexity %.3f", name, result["perplexity"][name]["ppl"])
    result["timing"]["perplexity_s"] = timer.elapsed()
    scored = sum(r["tokens_scored"] for r in result["perplexity"].values())
    if scored:
        result["timing"]["perplexity_tokens_per_s"] = round(scored / max(timer.elapsed(), 1e-9), 1)
    timer = Timer()
    tasks = {name: Path(path) for name, path in args.task}
    result["zero_shot"], forwarded = zero_shot(model, tokenizer, tasks, args.limit, args.batch_size,
                                               items=args.items, items_seed=args.items_seed)
    result["timing"]["zero_shot_s"] = timer.elapsed()
    if forwarded:
        result["timing"]["zero_shot_tokens"] = forwarded
        result["timing"]["zero_shot_tokens_per_s"] = round(forwarded / max(timer.elapsed(), 1e-9), 1)
    for name, metrics in result["zero_shot"].items():
        log.info("%s acc %.4f acc_norm %s", name, metrics["acc"], metrics["acc_norm"])
    write_stage_json(args.out, result, "evaluate")
