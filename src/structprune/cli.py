"""Command line: one subcommand per pipeline stage, every input and parameter explicit.

Snakemake rules call ``python -m structprune <stage> ...``; the same commands
can be rerun by hand on a compute node. The library never reads config.yaml.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("structprune")

MIRROR_ENV = "STRUCTPRUNE_DATA_MIRROR"


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def _option_value(value: str):
    """Method options arrive as strings; turn numbers and booleans into Python values."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def _mirror(args) -> str | None:
    mirror = args.mirror or os.environ.get(MIRROR_ENV) or None
    if mirror and not Path(mirror).is_dir():
        raise FileNotFoundError(
            f"data mirror {mirror} does not exist: fix data.mirror in config.yaml or {MIRROR_ENV}"
        )
    return mirror


def _placement(args):
    """(device, dtype) from the global --device/--dtype options."""
    from structprune.device import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    return device, resolve_dtype(args.dtype, device)


def _load(args, path, placement: str = "host"):
    """A checkpoint in the configured dtype, placed for the stage: "host" (weight-only work),
    "whole" (the model on the device) or "layerwise" (decoder layers visit the device one at a time)."""
    from structprune.device import place_layerwise, place_whole
    from structprune.models import load_checkpoint

    device, dtype = _placement(args)
    model, tokenizer = load_checkpoint(path, dtype)
    if placement == "whole":
        place_whole(model, device)
    elif placement == "layerwise":
        place_layerwise(model, device)
    log.info("%s: %s on %s (%s)", path, str(dtype).removeprefix("torch."), device, placement)
    return model, tokenizer


# --------------------------------------------------------------------------- stages

def cmd_model(args) -> None:
    from structprune.artifacts import build_manifest
    from structprune.checkpoint import save_checkpoint
    from structprune.models import load_source

    started = time.time()
    log.info("loading model source %s", args.source)
    model, tokenizer = load_source(args.source, _placement(args)[1])
    manifest = build_manifest("model", {}, {"source": args.source}, started)
    save_checkpoint(model, tokenizer, args.out, manifest)
    log.info("wrote %s", args.out)


def cmd_data_eval(args) -> None:
    from transformers import AutoTokenizer

    from structprune.checkpoint import save_tensors
    from structprune.data import load_text, tokenize_text

    mirror = _mirror(args)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    text = load_text(args.dataset, args.split, mirror)
    stream = tokenize_text(tokenizer, text)
    log.info("%s/%s: %d characters, %d tokens", args.dataset, args.split, len(text), stream.numel())
    meta = {"dataset": args.dataset, "split": args.split, "source": mirror or "hub", "tokens": stream.numel()}
    save_tensors({"input_ids": stream}, args.out, meta)


def cmd_data_calib(args) -> None:
    from structprune.checkpoint import save_tensors

    meta = {"dataset": args.dataset, "n_samples": args.n_samples, "seq_len": args.seq_len, "seed": args.seed}
    if args.dataset == "selfgen":
        from structprune.selfgen import generate_calibration

        model, tokenizer = _load(args, args.tokenizer, "whole")
        start = tokenizer.bos_token_id if args.start_token is None else args.start_token
        if start is None:
            raise ValueError("the tokenizer has no BOS token: pass --start-token (calibration.<name>.start_token)")
        samples = generate_calibration(
            model, start, args.n_samples, args.seq_len, args.seed, args.temperature, args.top_p,
            drop_start=args.drop_start,
        )
        meta.update(source="self-generated", start_token=start, temperature=args.temperature, top_p=args.top_p,
                    drop_start=args.drop_start)
        log.info("self-generated sample: %r", tokenizer.decode(samples[0][:64]))
    else:
        from transformers import AutoTokenizer

        from structprune.data import load_text, sample_windows, tokenize_text

        mirror = _mirror(args)
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        stream = tokenize_text(tokenizer, load_text(args.dataset, args.split, mirror))
        samples = sample_windows(stream, args.n_samples, args.seq_len, args.seed)
        meta.update(split=args.split, source=mirror or "hub")
    save_tensors({"input_ids": samples}, args.out, meta)
    log.info("calibration set %s: %s", args.out, tuple(samples.shape))


def cmd_data_task(args) -> None:
    from structprune.artifacts import atomic_file
    from structprune.tasks import read_task_records, write_jsonl

    records = read_task_records(args.task, _mirror(args))
    with atomic_file(args.out) as tmp:
        write_jsonl(records, tmp)
    log.info("task %s: %d records -> %s", args.task, len(records), args.out)


def cmd_calibrate(args) -> None:
    import torch

    from structprune.calibration import collect_statistics
    from structprune.checkpoint import load_tensors, save_tensors

    torch.manual_seed(0)
    started = time.time()
    model, _ = _load(args, args.model, "layerwise")
    input_ids = load_tensors(args.data)["input_ids"]
    stats, tokens = collect_statistics(model, input_ids, args.batch_size)
    meta = {
        "tokens": tokens, "samples": int(input_ids.shape[0]), "seq_len": int(input_ids.shape[1]),
        "dtype": "float64", "wall_time_s": round(time.time() - started, 3),
    }
    save_tensors(stats, args.out, meta)
    log.info("statistics over %d tokens -> %s", tokens, args.out)


def cmd_score(args) -> None:
    from structprune.checkpoint import load_tensors, save_tensors
    from structprune.scores import score_model

    model, _ = _load(args, args.model, "host")
    stats = load_tensors(args.stats) if args.stats else None
    options = {k: _option_value(v) for k, v in args.option}
    scores = score_model(model, args.method, stats, options)
    save_tensors(scores, args.out, {"method": args.method, "options": options, "stats": args.stats})
    log.info("%s scores -> %s", args.method, args.out)


def _pruned_plan(args, model):
    """The plan (and the model, already sliced for the sequential flow) the prune options ask for."""
    from structprune.checkpoint import load_tensors
    from structprune.models import model_geometries
    from structprune.plan import plan_global, plan_uniform

    if args.flow == "sequential":
        from structprune.recover import prune_sequential
        from structprune.scores import score_method

        if args.structure != "uniform" or args.layers or args.compensate:
            raise ValueError("the sequential flow (Wanda-sp) supports only the uniform structure over all layers")
        if not (args.data and args.method):
            raise ValueError("the sequential flow needs --data (calibration samples) and --method")
        options = {k: _option_value(v) for k, v in args.option}
        scorer = score_method(args.method).make(**options)
        return prune_sequential(model, load_tensors(args.data)["input_ids"], scorer, args.sparsity, args.heads, args.batch_size)
    if not args.scores:
        raise ValueError("prune needs --scores (or --flow sequential with --data and --method)")
    scores = load_tensors(args.scores)
    geometries = model_geometries(model)
    if args.structure == "global":
        if args.layers:
            raise ValueError("--layers applies to the uniform structure only")
        plan = plan_global(scores, geometries, args.sparsity, args.heads)
    else:
        plan = plan_uniform(scores, geometries, args.sparsity, args.heads, tuple(args.layers) if args.layers else None)
    return None, plan


def cmd_prune(args) -> None:
    from structprune.artifacts import build_manifest
    from structprune.checkpoint import load_tensors, save_checkpoint
    from structprune.models import count_parameters
    from structprune.prune import prune_model

    started = time.time()
    if args.compensate and not args.stats:
        raise ValueError("--compensate (bias compensation) needs --stats: the dense model's calibration statistics")
    model, tokenizer = _load(args, args.model, "layerwise" if args.flow == "sequential" else "host")
    before = count_parameters(model)
    pruned, plan = _pruned_plan(args, model)
    if pruned is None:
        means = load_tensors(args.stats) if args.compensate else None
        pruned = prune_model(model, plan, means)
    model = pruned
    after = count_parameters(model)
    achieved = 1 - after["decoder_blocks"] / before["decoder_blocks"]
    log.info(
        "target sparsity %.3f, achieved %.4f of decoder-block parameters (%d -> %d); total %d -> %d",
        args.sparsity, achieved, before["decoder_blocks"], after["decoder_blocks"], before["total"], after["total"],
    )
    settings = {"sparsity": args.sparsity, "heads": args.heads}
    if args.structure != "uniform" or args.layers or args.compensate or args.flow != "dense":
        settings.update(structure=args.structure, layers=args.layers, compensate=args.compensate, flow=args.flow,
                        method=args.method, options=dict(args.option))
    inputs = {k: v for k, v in {"model": args.model, "scores": args.scores, "stats": args.stats, "data": args.data}.items() if v}
    manifest = build_manifest(
        "prune", inputs, settings, started,
        {"dense_parameters": before, "achieved_block_sparsity": achieved, "plan": plan.to_json()},
    )
    save_checkpoint(model.cpu(), tokenizer, args.out, manifest)


def cmd_gradients(args) -> None:
    import torch

    from structprune.checkpoint import load_tensors, save_tensors
    from structprune.taylor import taylor_statistics

    torch.manual_seed(0)
    started = time.time()
    model, _ = _load(args, args.model, "whole")
    input_ids = load_tensors(args.data)["input_ids"]
    stats = taylor_statistics(model, input_ids)
    meta = {"samples": int(input_ids.shape[0]), "seq_len": int(input_ids.shape[1]),
            "statistics": "gradients", "wall_time_s": round(time.time() - started, 3)}
    save_tensors(stats, args.out, meta)
    log.info("Taylor saliencies over %s tokens -> %s", tuple(input_ids.shape), args.out)


def cmd_recover(args) -> None:
    import torch

    from structprune.artifacts import build_manifest
    from structprune.checkpoint import load_tensors, save_checkpoint
    from structprune.models import count_parameters
    from structprune.recover import recover_model
    from structprune.scores import score_method

    torch.manual_seed(0)
    started = time.time()
    options = {k: _option_value(v) for k, v in args.option}
    scorer = score_method(args.method).make(**options)  # validates the method before the long work
    model, tokenizer = _load(args, args.model, "layerwise")
    input_ids = load_tensors(args.data)["input_ids"]
    before = count_parameters(model)
    model, plan, reports = recover_model(
        model, input_ids, scorer, args.sparsity, args.heads, args.damp, args.batch_size, target=args.target
    )
    after = count_parameters(model)
    achieved = 1 - after["decoder_blocks"] / before["decoder_blocks"]
    log.info("recovered: achieved %.4f of decoder-block parameters removed", achieved)
    manifest = build_manifest(
        "recover", {"model": args.model, "data": args.data},
        {"method": args.method, "options": options, "sparsity": args.sparsity, "heads": args.heads,
         "damp": args.damp, "target": args.target, "batch_size": args.batch_size},
        started,
        {
            "dense_parameters": before, "achieved_block_sparsity": achieved, "plan": plan.to_json(),
            "layers": [
                {"layer": r.layer, "o_proj_mse": r.o_proj_error, "down_proj_mse": r.down_proj_error}
                for r in reports
            ],
        },
    )
    save_checkpoint(model.cpu(), tokenizer, args.out, manifest)


def cmd_evaluate(args) -> None:
    import torch

    from structprune.artifacts import write_json
    from structprune.checkpoint import load_tensors
    from structprune.evaluate import Timer, perplexity, zero_shot
    from structprune.models import count_parameters

    missing = [path for _, path in args.ppl + args.task if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"evaluation data missing: {missing}; run the data stage first")
    torch.manual_seed(0)
    model, tokenizer = _load(args, args.model, "whole")
    result = {
        "model": args.model_name, "method": args.method, "calib": args.calib,
        "sparsity": args.sparsity, "stage": args.stage, "checkpoint": args.model,
        "parameters": count_parameters(model),
        "protocol": {"seq_len": args.seq_len, "max_tokens": args.max_tokens, "limit": args.limit},
        "perplexity": {}, "zero_shot": {}, "timing": {},
    }
    timer = Timer()
    for name, path in args.ppl:
        result["perplexity"][name] = perplexity(
            model, load_tensors(path)["input_ids"], args.seq_len, args.max_tokens, args.batch_size
        )
        log.info("%s perplexity %.3f", name, result["perplexity"][name]["ppl"])
    result["timing"]["perplexity_s"] = timer.elapsed()
    scored = sum(r["tokens_scored"] for r in result["perplexity"].values())
    if scored:
        result["timing"]["perplexity_tokens_per_s"] = round(scored / max(timer.elapsed(), 1e-9), 1)
    timer = Timer()
    tasks = {name: Path(path) for name, path in args.task}
    result["zero_shot"] = zero_shot(model, tokenizer, tasks, args.limit, args.batch_size)
    result["timing"]["zero_shot_s"] = timer.elapsed()
    for name, metrics in result["zero_shot"].items():
        log.info("%s acc %.4f acc_norm %s", name, metrics["acc"], metrics["acc_norm"])
    write_json(args.out, result)


def cmd_report(args) -> None:
    from structprune.tables import comparison_table, compute_time_summary, plot_perplexity, write_table

    table = comparison_table(args.evals)
    header = f"# {args.title}\n\n{args.note}" if args.note else f"# {args.title}"
    if args.benchmarks:
        header += "\n\n" + compute_time_summary(args.benchmarks)
    write_table(table, args.csv, args.md, header, args.tex, args.html)
    if args.plot:
        plot_perplexity(table, args.plot, args.title)
    log.info("table with %d rows -> %s, %s", len(table), args.csv, args.md)


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structprune", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="auto", help="auto (a GPU if torch sees one), cpu or cuda[:N]")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weight precision (auto: float32 on CPU, bfloat16 on GPU); statistics stay float64")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("model", help="materialise a model source as a safetensors checkpoint")
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_model)

    def data_args(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--split", default="none")
        p.add_argument("--tokenizer", "--model", dest="tokenizer", required=True,
                       help="checkpoint folder (its tokenizer; its model for selfgen)")
        p.add_argument("--mirror", default=None, help=f"mirror folder (default: ${MIRROR_ENV}, else the Hub)")
        p.add_argument("--out", required=True)

    p = sub.add_parser("data-eval", help="tokenise an evaluation split into one stream")
    data_args(p)
    p.set_defaults(func=cmd_data_eval)

    p = sub.add_parser("data-calib", help="calibration samples: windows of a text split, or self-generated")
    data_args(p)
    p.add_argument("--n-samples", type=int, required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0, help="selfgen only")
    p.add_argument("--top-p", type=float, default=1.0, help="selfgen only")
    p.add_argument("--start-token", type=int, default=None, help="selfgen only (default: BOS)")
    p.add_argument("--drop-start", action="store_true",
                   help="selfgen only: the start token conditions the generation but is not part of the sample")
    p.set_defaults(func=cmd_data_calib)

    p = sub.add_parser("data-task", help="export a zero-shot task split to jsonl")
    p.add_argument("--task", required=True)
    p.add_argument("--mirror", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_data_task)

    p = sub.add_parser("calibrate", help="per-layer activation statistics (float64)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("score", help="importance score per head and neuron")
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--stats", default=None)
    p.add_argument("--option", type=_key_value, action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("gradients", help="LLM-Pruner's Taylor saliencies per channel (backprop)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="calibration samples (data-calib output)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_gradients)

    p = sub.add_parser("prune", help="remove the lowest-scoring units")
    p.add_argument("--model", required=True)
    p.add_argument("--scores", default=None, help="score file (dense flow)")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of decoder-block parameters")
    p.add_argument("--heads", default="within_kv_groups", choices=["within_kv_groups", "kv_groups"])
    p.add_argument("--structure", default="uniform", choices=["uniform", "global"],
                   help="uniform: same ratio per pruned layer; global: FLAP's one threshold over all layers")
    p.add_argument("--layers", type=int, nargs=2, metavar=("START", "END"), default=None,
                   help="prune only layers [START, END) (LLM-Pruner's block-wise recipe)")
    p.add_argument("--compensate", action="store_true", help="FLAP's bias compensation (needs --stats)")
    p.add_argument("--stats", default=None, help="dense calibration statistics (for --compensate)")
    p.add_argument("--flow", default="dense", choices=["dense", "sequential"],
                   help="sequential: score each layer on the pruned model's activations (Wanda-sp)")
    p.add_argument("--data", default=None, help="calibration samples (sequential flow)")
    p.add_argument("--method", default=None, help="scoring method (sequential flow)")
    p.add_argument("--option", type=_key_value, action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("recover", help="prune layer by layer with least-squares recovery")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="calibration samples (data-calib output)")
    p.add_argument("--method", required=True)
    p.add_argument("--option", type=_key_value, action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--sparsity", type=float, required=True)
    p.add_argument("--heads", default="within_kv_groups", choices=["within_kv_groups", "kv_groups"])
    p.add_argument("--damp", type=float, default=0.01)
    p.add_argument("--target", default="block", choices=["block", "module"],
                   help="what a refit matrix reproduces: the dense layer's output stream (block) or "
                        "the dense module's output (module)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("evaluate", help="perplexity and zero-shot accuracy of a checkpoint")
    p.add_argument("--model", required=True)
    p.add_argument("--ppl", type=_key_value, action="append", default=[], metavar="DATASET=TOKENS")
    p.add_argument("--task", type=_key_value, action="append", default=[], metavar="TASK=JSONL")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--model-name", required=True)
    p.add_argument("--method", default="dense")
    p.add_argument("--calib", default="none")
    p.add_argument("--sparsity", type=int, default=0)
    p.add_argument("--stage", default="dense", choices=["dense", "pruned", "recovered"])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="comparison table and plot from evaluation JSONs")
    p.add_argument("--evals", nargs="+", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--tex", default=None, help="also write the table as LaTeX (booktabs)")
    p.add_argument("--html", default=None, help="also write the table as a self-contained HTML page")
    p.add_argument("--plot", default=None)
    p.add_argument("--title", default="structprune comparison")
    p.add_argument("--note", default="")
    p.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark TSVs to summarise")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.time()
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as error:
        log.error("%s", error)
        return 2
    log.info("%s done in %.1f s", args.command, time.time() - started)
    return 0
