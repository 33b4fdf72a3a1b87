"""What every stage shares: loading a checkpoint where the stage computes, the data mirror, the
model's limits, method options and recipe arguments."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from structprune.spec.catalog import (
    ALLOCATIONS,
    BUDGETS,
    DEPTH_SCORES,
    FLOWS,
    HEAD_MODES,
    RECONSTRUCTIONS,
    SEARCH_SCORES,
    SPARSITY_OF,
    TARGETS,
    UNITS,
)
from structprune.stages.argtypes import (
    key_value,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    probability,
    seed,
    share,
    sparsity,
)

log = logging.getLogger("structprune")

MIRROR_ENV = "STRUCTPRUNE_DATA_MIRROR"


def option_value(value: str):
    """Method options arrive as strings; turn numbers and booleans into Python values."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def data_mirror(args) -> str | None:
    mirror = args.mirror or os.environ.get(MIRROR_ENV) or None
    if mirror and not Path(mirror).is_dir():
        raise FileNotFoundError(
            f"data mirror {mirror} does not exist: fix data.mirror in config.yaml or {MIRROR_ENV}"
        )
    return mirror



def split_tokens(args):
    """(the tokenised split named by --dataset/--split, the mirror it was read from or None for
    the Hub): the stream every text-based data stage cuts its samples from."""
    from transformers import AutoTokenizer

    from structprune.data.text import load_text, tokenize_text

    mirror = data_mirror(args)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    return tokenize_text(tokenizer, load_text(args.dataset, args.split, mirror)), mirror

def device_and_dtype(args):
    """(device, dtype) from the global --device/--dtype options."""
    from structprune.model.device import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    return device, resolve_dtype(args.dtype, device)


def load_model(args, path, placement: str = "host"):
    """A checkpoint in the configured dtype, placed for the stage: "host" (weight-only work),
    "whole" (the model on the device) or "layerwise" (decoder layers visit the device one at a time)."""
    from structprune.model.device import place_layerwise, place_whole
    from structprune.model.loading import load_checkpoint

    device, dtype = device_and_dtype(args)
    model, tokenizer = load_checkpoint(path, dtype)
    if placement == "whole":
        place_whole(model, device)
    elif placement == "layerwise":
        place_layerwise(model, device)
    log.info("%s: %s on %s (%s)", path, str(dtype).removeprefix("torch."), device, placement)
    return model, tokenizer


def check_model_limits(config, seq_len: int, start_token: int | None = None) -> None:
    """Windows the model has positions for and a start token inside its vocabulary, before any work."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and seq_len > positions:
        raise ValueError(f"{seq_len}-token samples exceed the model's {positions} positions: lower seq_len")
    if start_token is not None and not 0 <= start_token < config.vocab_size:
        raise ValueError(f"start token {start_token} is outside the vocabulary (0..{config.vocab_size - 1}): "
                         "set calibration.<name>.start_token to a valid id, or null for BOS")


def self_generated_samples(args, meta: dict):
    """Samples the model generates itself from the start token (data-calib and data-heldout);
    the sampling settings are added to `meta`."""
    from structprune.data.selfgen import generate_calibration

    model, tokenizer = load_model(args, args.tokenizer, "whole")
    start = tokenizer.bos_token_id if args.start_token is None else args.start_token
    if start is None:
        raise ValueError("the tokenizer has no BOS token: pass --start-token (calibration.<name>.start_token)")
    check_model_limits(model.config, args.seq_len, start)
    samples = generate_calibration(
        model, start, args.n_samples, args.seq_len, args.seed, args.temperature, args.top_p,
        drop_start=args.drop_start,
    )
    meta.update(source="self-generated", start_token=start, temperature=args.temperature, top_p=args.top_p,
                drop_start=args.drop_start)
    log.info("self-generated sample: %r", tokenizer.decode(samples[0][:64]))
    return samples


def checked_dense_stream(args, refits: bool) -> str | None:
    """--dense-stream, checked against --model and --data (a cache of another model or sample
    set would silently give wrong targets); None when not given or when nothing refits."""
    if not args.dense_stream or not refits:
        return None
    from structprune.calibration.densestream import cache_problem

    if not args.data:
        raise ValueError("--dense-stream needs the samples it was recorded on: pass --data")
    problem = cache_problem(args.dense_stream, args.model, args.data, args.batch_size)
    if problem:
        raise ValueError(f"--dense-stream {args.dense_stream}: {problem}. Rebuild it with `python -m structprune "
                         f"dense-stream --model {args.model} --data {args.data} --batch-size {args.batch_size} "
                         f"--out {args.dense_stream}`, or drop --dense-stream")
    return args.dense_stream


def layers_arg(text: str):
    """--layers: protocol ([4, L-2)), all, or START:END."""
    if text in ("protocol", "all"):
        return text
    start, sep, end = text.partition(":")
    try:
        return [int(start), int(end)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes protocol, all or START:END, got {text!r}") from None


def parse_options(score: str, pairs: list[tuple[str, str]]) -> dict:
    """--option NAME=VALUE pairs as a score's options, each checked against the score maker's
    signature (`seed=abc` for an integer seed is an error, not a default)."""
    from structprune.spec.scoreoptions import option_value_problem, score_option_specs

    if score in SEARCH_SCORES:
        raise ValueError(f"--method {score!r} is DISP-LLM's search, not a score: run `python -m structprune disp-search`")
    specs = {} if score in DEPTH_SCORES else score_option_specs().get(score)  # depth criteria take no options
    if specs is None:
        raise ValueError(f"--method {score!r}: unknown score; known: {sorted(score_option_specs())}")
    # a word the option lists as a choice stays that word (redundancy=none is "none", not None)
    options = {k: v if v in ((specs.get(k) or {}).get("choices") or ()) else option_value(v) for k, v in pairs}
    problems = [f"--option {k}: score {score!r} has no such option (known: {sorted(specs) or 'none'})" if k not in specs
                else f"--option {k}={v!r}: {problem}" for k, v in options.items()
                if k not in specs or (problem := option_value_problem(specs[k], v))]
    if problems:
        raise ValueError("; ".join(problems))
    return options


def recipe_from_args(args):
    from structprune.spec.recipe import Recipe

    return Recipe(
        score=args.method, options=parse_options(args.method, args.option), heads=args.heads,
        allocation=args.allocation, budget=args.budget, layers=args.layers, sparsity_of=args.sparsity_of,
        flow=args.flow, reconstruct=args.reconstruct, damp=args.damp, target=args.target, round_to=args.round_to,
        unit=args.unit, depth_share=args.depth_share,
    )


def grid_value(value: str):
    """A grid alternative: a number or a boolean, else the word itself ("none" is a choice here)."""
    return value if value.lower() == "none" else option_value(value)


def check_gguf(path: str) -> None:
    """A GGUF export must hash to what its export record (the `.json` beside it) says."""
    from structprune.io.integrity import require_recorded_hash

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist: run the export stage first")
    require_recorded_hash(path)


def recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The model, sparsity and the five recipe choices (shared by prune and select)."""
    p.add_argument("--model", required=True)
    p.add_argument("--sparsity", type=sparsity, required=True, help="percent of parameters removed, as in the config (20; see --sparsity-of)")
    p.add_argument("--method", required=True, help="scoring method (a registered score)")
    p.add_argument("--option", type=key_value, action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--unit", default="width", choices=UNITS,
                   help="width: heads and neurons in every block; blocks: whole blocks (--method block_influence or sleb)")
    p.add_argument("--heads", default="within_kv_groups", choices=HEAD_MODES,
                   help="head unit: query heads within every kv group, or whole kv groups")
    p.add_argument("--allocation", default="uniform", choices=ALLOCATIONS,
                   help="uniform: same ratio per pruned layer; global: FLAP's one threshold over the pruned layers")
    p.add_argument("--budget", default="matched", choices=BUDGETS,
                   help="uniform allocation: matched (ours: MLP takes the remainder), per_module (LLM-Pruner) "
                        "or mlp_only (ours: heads kept); global allocation: matched (kv groups and neurons) "
                        "or mlp_only (neurons alone)")
    p.add_argument("--layers", type=layers_arg, default="all",
                   help="pruned blocks: protocol ([4, L-2), the paper's), all, or START:END")
    p.add_argument("--sparsity-of", default="blocks", choices=SPARSITY_OF,
                   help="the sparsity is a share of decoder-block parameters or of all parameters")
    p.add_argument("--flow", default="dense", choices=FLOWS,
                   help="dense: scores from --scores; sequential: each layer scored on the pruned model's activations")
    p.add_argument("--reconstruct", default="none", choices=RECONSTRUCTIONS,
                   help="none, bias (FLAP), refit (ours, after the cut), paper (pre-pruning refit, Algorithms 1, 3, 4)")
    p.add_argument("--damp", type=nonnegative_float, default=1.0,
                   help="per-channel ridge toward the dense weights (refits); 1.0 keeps them from amplifying rounding")
    p.add_argument("--target", default="block", choices=TARGETS,
                   help="refit target of --reconstruct refit: the dense residual stream (block) or module output")
    p.add_argument("--depth-share", type=share, default=0.0,
                   help="width methods (ours): this share of the removal as whole blocks first (Block Influence), "
                        "the rest by width over the blocks left; 0: width only")
    p.add_argument("--round-to", type=positive_int, default=1,
                   help="every pruned layer keeps a multiple of this many MLP neurons (ours; 8 suits llama.cpp's kernels)")


def data_arguments(p) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="none")
    p.add_argument("--tokenizer", "--model", dest="tokenizer", required=True,
                   help="checkpoint folder (its tokenizer; its model for selfgen)")
    p.add_argument("--mirror", default=None, help=f"mirror folder (default: ${MIRROR_ENV}, else the Hub)")
    p.add_argument("--out", required=True)


def sample_arguments(p) -> None:
    p.add_argument("--n-samples", type=positive_int, required=True)
    p.add_argument("--seq-len", type=positive_int, required=True)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--temperature", type=positive_float, default=1.0, help="selfgen only")
    p.add_argument("--top-p", type=probability, default=1.0, help="selfgen only")
    p.add_argument("--start-token", type=nonnegative_int, default=None, help="selfgen only (default: BOS)")
    p.add_argument("--drop-start", action="store_true",
                   help="selfgen only: the start token conditions the generation but is not part of the sample")


class Timer:
    """Wall time of a stage's step, rounded for its JSON."""

    def __init__(self):
        self.start = time.time()

    def elapsed(self) -> float:
        return round(time.time() - self.start, 3)
