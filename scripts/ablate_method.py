"""Ablations of the distribution-aware method's choices (docs/method.md), measured on the
same protocol as the comparison table (perplexity on the first `--max-tokens` tokens of
WikiText-2 and PTB test, 128-token windows).

Reads the artefacts a default `make run` leaves behind (model, calibration samples,
statistics, evaluation tokens); writes results/ablations/<model>.{json,md} and prints them.

    python scripts/ablate_method.py --model smollm2-135m --calib wikitext2
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from structprune.artifacts import atomic_file
from structprune.calibration import collect_statistics
from structprune.checkpoint import load_tensors
from structprune.evaluate import perplexity
from structprune.models import load_checkpoint, model_geometries
from structprune.plan import plan_global, plan_uniform
from structprune.prune import prune_model
from structprune.recover import recover_model
from structprune.scores import score_method, score_model
from structprune.selfgen import generate_calibration

# (name, score options, recovery: None or recover_model keyword arguments[, plan options])
VARIANTS = [
    ("output score (default), no recovery", {}, None),
    ("closed-form MLP score (w1=up)", {"mlp": "closed_form"}, None),
    ("closed-form MLP score (w1=gate)", {"mlp": "closed_form", "w1": "gate"}, None),
    ("head grouping D>=0.2", {"group_threshold": 0.2}, None),
    ("recovery, damp 0.01, target block, refit o+down (default)", {}, {"damp": 0.01}),
    ("recovery, target module (dense module outputs, no drift correction)", {}, {"damp": 0.01, "target": "module"}),
    ("recovery, damp 0", {}, {"damp": 0.0}),
    ("recovery, damp 0.1", {}, {"damp": 0.1}),
    ("recovery, damp 1.0", {}, {"damp": 1.0}),
    ("recovery, refit none (pruned-stream scores only)", {}, {"damp": 0.01, "refit": ()}),
    ("recovery, refit o_proj only", {}, {"damp": 0.01, "refit": ("o_proj",)}),
    ("recovery, refit down_proj only", {}, {"damp": 0.01, "refit": ("down_proj",)}),
    # which units and layers go (the peers' allocations, with our score; no recovery)
    ("heads removed as whole kv groups", {}, None, {"head_mode": "kv_groups"}),
    ("layers [4, 28) only (LLM-Pruner's block-wise range)", {}, None, {"layer_range": (4, 28)}),
    ("global structure: one threshold over all layers (FLAP's, kv groups)", {}, None, {"structure": "global"}),
]


def make_plan(scores, geometries, sparsity, plan_options):
    options = dict(plan_options or {})
    if options.pop("structure", "uniform") == "global":
        return plan_global(scores, geometries, sparsity, "kv_groups")
    return plan_uniform(scores, geometries, sparsity, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--calib", default="wikitext2")
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--only", nargs="*", help="indices of VARIANTS to run")
    parser.add_argument("--selfgen", nargs=2, type=float, metavar=("TEMPERATURE", "TOP_P"),
                        help="generate fresh self-generated samples with these settings (instead of --calib's)")
    parser.add_argument("--start-token", type=int, help="start token for --selfgen (default: BOS)")
    parser.add_argument("--n-samples", type=int, default=64, help="sample count for --selfgen")
    parser.add_argument("--drop-first", action="store_true",
                        help="drop each sample's first token (e.g. selfgen's start token) and recompute statistics")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/ablations")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dense, _ = load_checkpoint(f"resources/models/{args.model}")
    if args.selfgen:
        temperature, top_p = args.selfgen
        start = dense.config.bos_token_id if args.start_token is None else args.start_token
        samples = generate_calibration(dense, start, args.n_samples, 128, 0, temperature, top_p, progress=False, drop_start=True)
        stats = collect_statistics(dense, samples, progress=False)[0]
        label = f"selfgen-T{temperature:g}-p{top_p:g}-s{start}-n{args.n_samples}-nostart"
    else:
        stats = load_tensors(f"results/{args.model}/calib/{args.calib}/stats.safetensors")
        samples = load_tensors(f"resources/data/{args.model}/calib/{args.calib}.safetensors")["input_ids"]
        label = args.calib
    if args.drop_first:
        samples = samples[:, 1:].contiguous()
        stats = collect_statistics(dense, samples, progress=False)[0]
        label += "-dropfirst"
    streams = {d: load_tensors(f"resources/data/{args.model}/eval/{d}.safetensors")["input_ids"] for d in ("wikitext2", "ptb")}

    def ppl(model):
        return {d: perplexity(model, s, 128, args.max_tokens, progress=False)["ppl"] for d, s in streams.items()}

    command = " ".join(["python", "scripts/ablate_method.py", *sys.argv[1:]])
    rows = [{"variant": "dense", **ppl(dense), "seconds": 0.0, "command": command}]
    print(rows[0], flush=True)
    chosen = [VARIANTS[int(i)] for i in args.only] if args.only else VARIANTS
    for name, options, recovery, *plan_options in chosen:
        started = time.time()
        model = copy.deepcopy(dense)
        if recovery is None:
            scores = score_model(model, "distribution", stats, options)
            plan = make_plan(scores, model_geometries(model), args.sparsity, plan_options[0] if plan_options else None)
            model = prune_model(model, plan)
        else:
            scorer = score_method("distribution").make(**options)
            model = recover_model(model, samples, scorer, args.sparsity, progress=False, **recovery)[0]
        rows.append({"variant": name, **ppl(model), "seconds": round(time.time() - started, 1), "command": command})
        print(rows[-1], flush=True)

    out = Path(args.out)
    previous = out / f"{args.model}.{label}.json"
    if args.only and previous.is_file():  # a partial rerun updates its rows, keeps the others
        fresh = {r["variant"] for r in rows}
        kept = [r for r in json.loads(previous.read_text()) if r["variant"] not in fresh]
        order = ["dense"] + [v[0] for v in VARIANTS]
        rows = sorted(rows + kept, key=lambda r: order.index(r["variant"]) if r["variant"] in order else len(order))
    header = (
        f"# Ablations: {args.model}, distribution-aware score, {label} calibration "
        f"({tuple(samples.shape)} tokens), {args.sparsity:.0%} sparsity\n\nPerplexity on the first "
        f"{args.max_tokens} tokens of WikiText-2 test and PTB validation (128-token windows). "
        "Commands (per row in the JSON): " + ", ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", "?") for r in rows))
        + ".\n\n| variant | WikiText2 | PTB | ratio to dense (WikiText2 / PTB) | seconds |\n|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['variant']} | {r['wikitext2']:.2f} | {r['ptb']:.2f} | {r['wikitext2'] / rows[0]['wikitext2']:.2f} / {r['ptb'] / rows[0]['ptb']:.2f} | {r['seconds']} |"
        for r in rows
    ]
    with atomic_file(out / f"{args.model}.{label}.md") as tmp:
        tmp.write_text(header + "\n".join(lines) + "\n")
    with atomic_file(out / f"{args.model}.{label}.json") as tmp:
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
    print(header + "\n".join(lines))


if __name__ == "__main__":
    main()
