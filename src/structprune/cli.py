"""Command line: one subcommand per pipeline stage, every input and parameter explicit.

Snakemake rules call ``python -m structprune <stage> ...``; the same commands
can be rerun by hand on a compute node. The library never reads config.yaml.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from structprune.argtypes import (
    key_path, key_value, nonnegative_float, nonnegative_int, positive_float, positive_int, probability, seed, sparsity,
)

log = logging.getLogger("structprune")

MIRROR_ENV = "STRUCTPRUNE_DATA_MIRROR"


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

    log.info("loading model source %s", args.source)
    model, tokenizer = load_source(args.source, _placement(args)[1])
    manifest = build_manifest("model", {}, {"source": args.source})
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


def _check_model_limits(config, seq_len: int, start_token: int | None = None) -> None:
    """Windows the model has positions for and a start token inside its vocabulary, before any work."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and seq_len > positions:
        raise ValueError(f"{seq_len}-token samples exceed the model's {positions} positions: lower seq_len")
    if start_token is not None and not 0 <= start_token < config.vocab_size:
        raise ValueError(f"start token {start_token} is outside the vocabulary (0..{config.vocab_size - 1}): "
                         "set calibration.<name>.start_token to a valid id, or null for BOS")


def _self_generated(args, meta: dict):
    """Samples the model generates itself from the start token (data-calib and data-heldout);
    the sampling settings are added to `meta`."""
    from structprune.selfgen import generate_calibration

    model, tokenizer = _load(args, args.tokenizer, "whole")
    start = tokenizer.bos_token_id if args.start_token is None else args.start_token
    if start is None:
        raise ValueError("the tokenizer has no BOS token: pass --start-token (calibration.<name>.start_token)")
    _check_model_limits(model.config, args.seq_len, start)
    samples = generate_calibration(
        model, start, args.n_samples, args.seq_len, args.seed, args.temperature, args.top_p,
        drop_start=args.drop_start,
    )
    meta.update(source="self-generated", start_token=start, temperature=args.temperature, top_p=args.top_p,
                drop_start=args.drop_start)
    log.info("self-generated sample: %r", tokenizer.decode(samples[0][:64]))
    return samples


def cmd_data_calib(args) -> None:
    from structprune.checkpoint import save_tensors

    meta = {"dataset": args.dataset, "n_samples": args.n_samples, "seq_len": args.seq_len, "seed": args.seed}
    if args.dataset == "selfgen":
        samples = _self_generated(args, meta)
    elif args.dataset == "random":
        from transformers import AutoConfig

        from structprune.data import random_token_samples

        vocab_size = AutoConfig.from_pretrained(args.tokenizer).vocab_size
        samples = random_token_samples(vocab_size, args.n_samples, args.seq_len, args.seed)
        meta.update(source="uniform random token ids", vocab_size=vocab_size)
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


def cmd_data_heldout(args) -> None:
    """Held-out calibration samples for `select`: windows of the fit sets' text that none of
    their windows covers (heldout.py), or, for self-generated fit sets, fresh generations
    under another seed. Never evaluation data."""
    from safetensors import safe_open

    from structprune.checkpoint import load_tensors, save_tensors

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
        samples = _self_generated(args, meta)
    else:
        from transformers import AutoTokenizer

        from structprune.data import load_text, tokenize_text
        from structprune.heldout import heldout_windows

        mirror = _mirror(args)
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        stream = tokenize_text(tokenizer, load_text(args.dataset, args.split, mirror))
        fits = [load_tensors(path)["input_ids"] for path in args.exclude]
        samples, starts = heldout_windows(stream, fits, args.n_samples, args.seq_len, args.seed)
        meta.update(split=args.split, source=mirror or "hub", starts=starts)
    save_tensors({"input_ids": samples}, args.out, meta)
    log.info("held-out set %s: %s, apart from %s", args.out, tuple(samples.shape), args.exclude)


def cmd_data_task(args) -> None:
    from structprune.artifacts import atomic_file, sha256_path, write_json
    from structprune.tasks import read_task_records, write_jsonl

    records = read_task_records(args.task, _mirror(args))
    with atomic_file(args.out) as tmp:
        write_jsonl(records, tmp)
        digest = sha256_path(tmp)
    write_json(Path(args.out).with_suffix(".json"), {"task": args.task, "records": len(records), "sha256": digest})
    log.info("task %s: %d records -> %s", args.task, len(records), args.out)


def cmd_calibrate(args) -> None:
    import torch

    from structprune.statistics import collect_statistics
    from structprune.checkpoint import load_tensors, save_tensors

    torch.manual_seed(0)
    started = time.time()
    model, _ = _load(args, args.model, "layerwise")
    input_ids = load_tensors(args.data)["input_ids"]
    from structprune.recipe import FULL_SITE_NAMES, StatisticsNeeds

    needs = StatisticsNeeds(frozenset(FULL_SITE_NAMES if args.full_sites is None else args.full_sites), args.attention_js)
    stats, tokens = collect_statistics(model, input_ids, args.batch_size, needs=needs)
    meta = {
        "tokens": tokens, "samples": int(input_ids.shape[0]), "seq_len": int(input_ids.shape[1]),
        "dtype": "float64",
        "full_sites": sorted(needs.full_sites), "attention_js": needs.attention_js,
    }
    save_tensors(stats, args.out, meta, timing={"wall_time_s": round(time.time() - started, 3)})
    log.info("statistics over %d tokens -> %s", tokens, args.out)


def cmd_score(args) -> None:
    from structprune.checkpoint import load_tensors, save_tensors
    from structprune.scores import score_model

    options = _options(args.method, args.option)
    model, _ = _load(args, args.model, "host")
    stats = load_tensors(args.stats) if args.stats else None
    scores = score_model(model, args.method, stats, options)
    save_tensors(scores, args.out, {"method": args.method, "options": options, "stats": args.stats})
    log.info("%s scores -> %s", args.method, args.out)


def _dense_stream(args, refits: bool) -> str | None:
    """--dense-stream, checked against --model and --data (a cache of another model or sample
    set would silently give wrong targets); None when not given or when nothing refits."""
    if not args.dense_stream or not refits:
        return None
    from structprune.densestream import cache_problem

    if not args.data:
        raise ValueError("--dense-stream needs the samples it was recorded on: pass --data")
    problem = cache_problem(args.dense_stream, args.model, args.data, args.batch_size)
    if problem:
        raise ValueError(f"--dense-stream {args.dense_stream}: {problem}. Rebuild it with `python -m structprune "
                         f"dense-stream --model {args.model} --data {args.data} --batch-size {args.batch_size} "
                         f"--out {args.dense_stream}`, or drop --dense-stream")
    return args.dense_stream


def cmd_dense_stream(args) -> None:
    """The dense model's residual updates per layer on calibration samples (densestream.py)."""
    import torch

    from structprune.artifacts import build_manifest
    from structprune.checkpoint import load_tensors
    from structprune.densestream import record_dense_stream

    torch.manual_seed(0)
    started = time.time()
    samples = load_tensors(args.data)["input_ids"]
    model, _ = _load(args, args.model, "layerwise")
    manifest = build_manifest("dense-stream", {"model": args.model, "data": args.data}, {"batch_size": args.batch_size})
    record_dense_stream(model, samples, args.batch_size, args.out, manifest)
    log.info("dense stream over %s samples -> %s (%.1f s)", tuple(samples.shape), args.out, time.time() - started)


def _layers_arg(text: str):
    """--layers: protocol ([4, L-2)), all, or START:END."""
    if text in ("protocol", "all"):
        return text
    start, sep, end = text.partition(":")
    try:
        return [int(start), int(end)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes protocol, all or START:END, got {text!r}") from None


def _options(score: str, pairs: list[tuple[str, str]]) -> dict:
    """--option NAME=VALUE pairs as a score's options, each checked against the score maker's
    signature (`seed=abc` for an integer seed is an error, not a default)."""
    from structprune.optionnames import option_value_problem, score_option_specs

    specs = score_option_specs().get(score)
    if specs is None:
        raise ValueError(f"--method {score!r}: unknown score; known: {sorted(score_option_specs())}")
    # a word the option lists as a choice stays that word (redundancy=none is "none", not None)
    options = {k: v if v in ((specs.get(k) or {}).get("choices") or ()) else _option_value(v) for k, v in pairs}
    problems = [f"--option {k}: score {score!r} has no such option (known: {sorted(specs) or 'none'})" if k not in specs
                else f"--option {k}={v!r}: {problem}" for k, v in options.items()
                if k not in specs or (problem := option_value_problem(specs[k], v))]
    if problems:
        raise ValueError("; ".join(problems))
    return options


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


def _recipe(args):
    from structprune.recipe import Recipe

    return Recipe(
        score=args.method, options=_options(args.method, args.option), heads=args.heads,
        allocation=args.allocation, budget=args.budget, layers=args.layers, sparsity_of=args.sparsity_of,
        flow=args.flow, reconstruct=args.reconstruct, damp=args.damp, target=args.target, round_to=args.round_to,
    )


def cmd_prune(args) -> None:
    import torch

    from structprune.artifacts import build_manifest
    from structprune.checkpoint import load_tensors, save_checkpoint
    from structprune.engine import check_recipe, prune_with_recipe
    from structprune.models import count_parameters
    from structprune.scores import score_method

    torch.manual_seed(0)
    recipe = _recipe(args)
    score_method(recipe.score).make(**recipe.options)  # a bad option fails here, before any loading
    check_recipe(recipe, args.scores or None, args.stats or None, args.data or None)
    _check_scores_file(args.scores, recipe.score, recipe.options)
    dense_stream = _dense_stream(args, recipe.refits)  # a mismatched cache fails before loading
    model, tokenizer = _load(args, args.model, "layerwise" if recipe.needs_samples else "host")
    scores = load_tensors(args.scores) if args.scores else None
    stats = load_tensors(args.stats) if args.stats else None
    samples = load_tensors(args.data)["input_ids"] if args.data else None
    before = count_parameters(model)
    result = prune_with_recipe(model, recipe, args.sparsity, scores=scores, stats=stats, samples=samples,
                               batch_size=args.batch_size, dense_stream=dense_stream)
    model = result.model
    after = count_parameters(model)
    achieved = 1 - after["decoder_blocks"] / before["decoder_blocks"]
    achieved_total = 1 - after["total"] / before["total"]
    log.info(
        "target sparsity %.3f of %s parameters over layers [%d, %d) (per-layer ratio %.4f); removed %.4f of "
        "decoder-block parameters (%d -> %d), %.4f of all (%d -> %d)",
        args.sparsity, recipe.sparsity_of, *result.layer_range, result.ratio, achieved,
        before["decoder_blocks"], after["decoder_blocks"], achieved_total, before["total"], after["total"],
    )
    inputs = {k: v for k, v in {"model": args.model, "scores": args.scores, "stats": args.stats, "data": args.data,
                                "dense_stream": dense_stream}.items() if v}
    manifest = build_manifest(
        "prune", inputs, {"sparsity": args.sparsity, "recipe": recipe.to_json(), "batch_size": args.batch_size},
        {
            "dense_parameters": before, "achieved_block_sparsity": achieved, "achieved_total_sparsity": achieved_total,
            "layer_range": list(result.layer_range), "layer_ratio": result.ratio,
            "budgets": [[b.heads, b.neurons] for b in result.budgets],
            "plan": result.plan.to_json(), "layers": result.reports,
        },
    )
    save_checkpoint(model.cpu(), tokenizer, args.out, manifest)


def cmd_select(args) -> None:
    """Prune with every candidate of a grid and keep the lowest held-out loss (selection.py)."""
    import torch

    from structprune.artifacts import build_manifest
    from structprune.checkpoint import load_tensors, save_checkpoint
    from structprune.models import count_parameters
    from structprune.selection import select_recipe

    torch.manual_seed(0)
    base = _recipe(args)
    grid = {key: [_grid_value(v) for v in values.split(",")] for key, values in args.grid}
    from structprune.configcheck import grid_problems

    if problems := grid_problems(base.score, grid):
        raise ValueError("--" + "; --".join(problems))
    full_grid, chosen_at = grid, args.sparsity
    if args.chosen_in:
        grid, chosen_at = chosen_grid(args.chosen_in, base, grid, args.rechoose)
    elif args.rechoose:
        raise ValueError("--rechoose needs --chosen-in (the checkpoint whose other choices it keeps)")
    if not Path(args.heldout).is_file():
        raise FileNotFoundError(f"held-out samples {args.heldout!r} not found: run data-calib for the held-out set first")
    dense_stream = _dense_stream(args, True)
    model, tokenizer = _load(args, args.model, "layerwise")
    stats = load_tensors(args.stats) if args.stats else None
    samples = load_tensors(args.data)["input_ids"] if args.data else None
    heldout = load_tensors(args.heldout)["input_ids"]
    before = count_parameters(model)
    result, chosen_index, candidates = select_recipe(model, base, grid, args.sparsity, heldout=heldout,
                                                     samples=samples, stats=stats, batch_size=args.batch_size,
                                                     dense_stream=dense_stream)
    chosen = candidates[chosen_index].recipe
    after = count_parameters(result.model)
    log.info("chosen: %s (held-out loss %.4f)", candidates[chosen_index].overrides, candidates[chosen_index].heldout_loss)
    inputs = {k: v for k, v in {"model": args.model, "stats": args.stats, "data": args.data, "heldout": args.heldout,
                                "chosen_in": args.chosen_in, "dense_stream": dense_stream}.items() if v}
    manifest = build_manifest(
        "select", inputs, {"sparsity": args.sparsity, "base_recipe": base.to_json(),
                           "grid": full_grid, "chosen_at": chosen_at, **({"rechoose": args.rechoose} if args.chosen_in else {})},
        {
            "dense_parameters": before, "achieved_block_sparsity": 1 - after["decoder_blocks"] / before["decoder_blocks"],
            "achieved_total_sparsity": 1 - after["total"] / before["total"], "recipe": chosen.to_json(),
            "candidates": [c.to_json(i == chosen_index) for i, c in enumerate(candidates)],
            "heldout_samples": list(heldout.shape), "plan": result.plan.to_json(), "layers": result.reports,
        },
    )
    save_checkpoint(result.model.cpu(), tokenizer, args.out, manifest)


def chosen_grid(checkpoint: str, base, grid: dict, rechoose: list[str] = ()) -> tuple[dict, float]:
    """The grid of the choice a select checkpoint made (`select.at`): one value per key, the
    value chosen there, except the keys in `rechoose`, which keep all their alternatives and
    are chosen again here; and the sparsity it was made at. Its base recipe and grid must be
    this job's, else the choice answers another question."""
    unknown = [key for key in rechoose if key not in grid]
    if unknown:
        raise ValueError(f"--rechoose {unknown}: not keys of the grid {sorted(grid)}")
    from structprune.integrity import read_stage_json

    path = Path(checkpoint) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"--chosen-in {checkpoint}: no manifest.json; run the select job at that sparsity first")
    manifest = read_stage_json(path)
    params = manifest.get("parameters", {})
    if manifest.get("stage") != "select" or "base_recipe" not in params:
        raise ValueError(f"--chosen-in {checkpoint}: not a select checkpoint (its manifest has no base recipe)")
    as_json = lambda value: json.loads(json.dumps(value))  # noqa: E731  (tuples read back as lists)
    if params["base_recipe"] != as_json(base.to_json()) or params["grid"] != as_json(grid):
        raise ValueError(f"--chosen-in {checkpoint}: chosen for another recipe or grid (base {params['base_recipe']}, "
                         f"grid {params['grid']}); this job has base {base.to_json()}, grid {grid}: rerun that select job")
    chosen = [c for c in manifest["candidates"] if c["chosen"]]
    if len(chosen) != 1:
        raise ValueError(f"--chosen-in {checkpoint}: the manifest records {len(chosen)} chosen candidates, not one")
    return {key: (list(grid[key]) if key in rechoose else [value]) for key, value in chosen[0]["overrides"].items()}, params["sparsity"]


def _grid_value(value: str):
    """A grid alternative: a number or a boolean, else the word itself ("none" is a choice here)."""
    return value if value.lower() == "none" else _option_value(value)


def cmd_gradients(args) -> None:
    import torch

    from structprune.checkpoint import load_tensors, save_tensors
    from structprune.scores.taylor import taylor_statistics

    torch.manual_seed(0)
    started = time.time()
    model, _ = _load(args, args.model, "whole")
    input_ids = load_tensors(args.data)["input_ids"]
    stats = taylor_statistics(model, input_ids)
    meta = {"samples": int(input_ids.shape[0]), "seq_len": int(input_ids.shape[1]),
            "statistics": "gradients"}
    save_tensors(stats, args.out, meta, timing={"wall_time_s": round(time.time() - started, 3)})
    log.info("Taylor saliencies over %s tokens -> %s", tuple(input_ids.shape), args.out)


def cmd_evaluate(args) -> None:
    import torch

    from structprune.artifacts import write_stage_json
    from structprune.checkpoint import load_tensors
    from structprune.evaluate import Timer, perplexity, zero_shot
    from structprune.models import count_parameters

    missing = [path for _, path in args.ppl + args.task if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"evaluation data missing: {missing}; run the data stage first")
    from structprune.integrity import require_recorded_hash

    for _, path in args.task:  # the token streams are checked as they load
        require_recorded_hash(path)
    torch.manual_seed(0)
    model, tokenizer = _load(args, args.model, "whole")
    _check_model_limits(model.config, args.seq_len)
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
    result["zero_shot"], forwarded = zero_shot(model, tokenizer, tasks, args.limit, args.batch_size)
    result["timing"]["zero_shot_s"] = timer.elapsed()
    if forwarded:
        result["timing"]["zero_shot_tokens"] = forwarded
        result["timing"]["zero_shot_tokens_per_s"] = round(forwarded / max(timer.elapsed(), 1e-9), 1)
    for name, metrics in result["zero_shot"].items():
        log.info("%s acc %.4f acc_norm %s", name, metrics["acc"], metrics["acc_norm"])
    write_stage_json(args.out, result, "evaluate")


def cmd_export(args) -> None:
    """A checkpoint as a GGUF file for llama.cpp, checked by loading it there and generating."""
    import torch

    from structprune.artifacts import sha256_path, write_stage_json
    from structprune.evaluate import Timer
    from structprune.gguf_export import export_gguf
    from structprune.llamacpp import greedy_tokens, require_llama_cpp
    from structprune.models import resolve_model_source

    require_llama_cpp()  # before the export: the file is only done once llama.cpp has run it
    resolved = resolve_model_source(args.source) if args.source else None
    source_gguf = resolved.gguf_path if resolved else None
    model, tokenizer = _load(args, args.model, "host")
    model = model.to(torch.float32)
    timer = Timer()
    summary = export_gguf(model, tokenizer, args.out, args.type, source_gguf=source_gguf,
                          tokenizer_pre=args.tokenizer_pre, name=Path(args.model).name)
    prompt = tokenizer(args.prompt)["input_ids"]
    generated = greedy_tokens(args.out, prompt, args.new_tokens, threads=torch.get_num_threads())
    with torch.no_grad():
        reference = model.generate(torch.tensor([prompt]), max_new_tokens=args.new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.eos_token_id)[0, len(prompt):].tolist()
    summary |= {"sha256": sha256_path(args.out), "checkpoint": args.model, "prompt": args.prompt, "llama_cpp_greedy": tokenizer.decode(generated),
                "transformers_greedy": tokenizer.decode(reference), "greedy_tokens_agree": generated == reference,
                "tokenizer": "copied from " + source_gguf if source_gguf else f"built from the checkpoint's ({args.tokenizer_pre})"}
    log.info("%s: %s, %.1f MB; llama.cpp continues %r with %r (transformers: %r)", args.out, summary["architecture"],
             summary["bytes"] / 2**20, args.prompt, summary["llama_cpp_greedy"], summary["transformers_greedy"])
    write_stage_json(args.out_json, {**summary, "timing": {"export_s": timer.elapsed()}}, "export")


def cmd_evaluate_gguf(args) -> None:
    """Perplexity of a GGUF export in llama.cpp, on the evaluate stage's protocol."""
    import torch

    from structprune.artifacts import write_stage_json
    from structprune.checkpoint import load_tensors
    from structprune.evaluate import Timer
    from structprune.llamacpp import perplexity

    _check_gguf(args.gguf)
    timer = Timer()
    result = {"gguf": args.gguf, "checkpoint_eval": args.checkpoint_eval, "protocol": {"seq_len": args.seq_len, "max_tokens": args.max_tokens},
              "perplexity": {}}
    for name, path in args.ppl:
        result["perplexity"][name] = perplexity(args.gguf, load_tensors(path)["input_ids"], args.seq_len, args.max_tokens,
                                                threads=torch.get_num_threads())
        log.info("%s perplexity in llama.cpp %.3f", name, result["perplexity"][name]["ppl"])
    write_stage_json(args.out, {**result, "timing": {"perplexity_s": timer.elapsed()}}, "evaluate-gguf")


def _check_gguf(path: str) -> None:
    """A GGUF export must hash to what its export record (the `.json` beside it) says."""
    from structprune.integrity import require_recorded_hash

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist: run the export stage first")
    require_recorded_hash(path)


def cmd_speed(args) -> None:
    """Prefill/decode throughput and memory of a checkpoint beside the dense model."""
    import torch

    from structprune.artifacts import write_stage_json
    from structprune.speed import SpeedProtocol, measure_pair, speed_report

    torch.manual_seed(0)
    protocol = SpeedProtocol(prefill_batch=args.prefill[0], prefill_length=args.prefill[1], new_tokens=args.new_tokens,
                             decode_batches=tuple(args.decode_batches), repeats=args.repeats)
    models = {"dense": _load(args, args.dense, "whole")[0], "checkpoint": _load(args, args.model, "whole")[0]}
    report = speed_report(measure_pair(models, protocol))
    llamacpp = None
    if args.gguf:
        from structprune.llamacpp import LlamaCppProtocol, measure_speed

        _check_gguf(args.gguf)
        _check_gguf(args.dense_gguf)

        cpp_protocol = LlamaCppProtocol(new_tokens=args.llamacpp_new_tokens, repeats=args.llamacpp_repeats)
        measured = measure_speed({"dense": args.dense_gguf, "checkpoint": args.gguf}, cpp_protocol, torch.get_num_threads())
        llamacpp = {"protocol": cpp_protocol.to_json(), "dense_gguf": args.dense_gguf, "gguf": args.gguf, "timing": measured,
                    "ratio_to_dense": {k: measured["checkpoint"][k] / measured["dense"][k] for k in measured["dense"]}}
        log.info("llama.cpp: %s, ratios %s", measured, {k: round(v, 3) for k, v in llamacpp["ratio_to_dense"].items()})
    for name, figures in report.items():
        log.info("%s: prefill %.0f tok/s, decode %s tok/s, peak %.0f MB, ratios %s", name,
                 figures["prefill_tokens_per_s"], figures["decode_tokens_per_s"],
                 figures["peak_generation_bytes"] / 2**20, {k: round(v, 3) for k, v in figures["ratio_to_dense"].items()})
    write_stage_json(args.out, {"checkpoint": args.model, "dense": args.dense, "protocol": protocol.to_json(),
                                "threads": torch.get_num_threads(), "timing": report,
                                **({"llamacpp": llamacpp} if llamacpp else {})}, "speed")


def cmd_report(args) -> None:
    from structprune.tables import (
        RECOVERY_NOTE, SIGNIFICANCE_NOTE, SPEED_NOTE, comparison_table, compute_time_summary, plot_perplexity,
        uses_paper_recovery, write_table,
    )

    table = comparison_table(args.evals, dict(args.label), args.speeds)
    header = f"# {args.title}\n\n{args.note}" if args.note else f"# {args.title}"
    if "Avg se" in table or any(column.endswith("95% CI") for column in table.columns):
        header += "\n\n" + SIGNIFICANCE_NOTE
    if "Prefill x" in table:
        header += "\n\n" + SPEED_NOTE
    if uses_paper_recovery(args.evals):
        header += "\n\n" + RECOVERY_NOTE
    if "llama.cpp decode x" in table:
        from structprune.tables import LLAMACPP_NOTE

        header += "\n\n" + LLAMACPP_NOTE
    if args.benchmarks:
        header += "\n\n" + compute_time_summary(args.benchmarks)
    write_table(table, args.csv, args.md, header, args.tex, args.html)
    if args.selection_md:
        from structprune.tables import selection_table

        chosen = selection_table(args.selection, dict(args.label))
        note = ("Candidates of each method with a select section: the method's recipe with the listed overrides, "
                "pruned on its calibration samples; the held-out loss is the mean next-token loss on held-out "
                "calibration text (windows no fit sample covers; never evaluation data). The lowest is kept.")
        write_table(chosen, args.selection_csv, args.selection_md, f"# {args.title}: held-out selection\n\n{note}")
    if args.gguf_md:
        from structprune.tables import GGUF_NOTE, gguf_table

        exports = gguf_table(args.exports, args.gguf_evals, args.evals, dict(args.label))
        write_table(exports, args.gguf_csv, args.gguf_md, f"# {args.title}: GGUF exports for llama.cpp\n\n{GGUF_NOTE}")
    if args.plot:
        plot_perplexity(table, args.plot, args.title)
    if args.plot_accuracy:
        from structprune.tables import plot_accuracy

        plot_accuracy(table, args.plot_accuracy, args.title)
    if args.plot_tradeoff:
        from structprune.tables import plot_tradeoff

        plot_tradeoff(table, args.plot_tradeoff, args.title)
    if args.run_record:
        from structprune.artifacts import git_commit, package_versions, write_json

        write_json(args.run_record, {
            "title": args.title, "config_files": args.config_files, "config": json.loads(args.run_config),
            "git_commit": git_commit(), "versions": package_versions(), "evals": args.evals,
        })
    log.info("table with %d rows -> %s, %s", len(table), args.csv, args.md)


def cmd_check_config(args) -> None:
    """Read config files as the workflow would (later files update earlier ones) and validate
    them: every problem named with its file, line or key, without Snakemake."""
    from structprune.configcheck import ConfigError, validate_config
    from structprune.configfile import read_config_file

    merged: dict = {}
    for path in args.files:
        _deep_update(merged, read_config_file(path))
    try:
        validate_config(merged)
    except ConfigError as error:
        raise ValueError(f"{', '.join(args.files)}: {error}") from None
    log.info("%s: valid (%d models, %d methods, sparsities %s)", ", ".join(args.files), len(merged["models"]),
             len(merged["methods"]), merged["sparsities"])


def _deep_update(base: dict, update: dict) -> None:
    """Snakemake's merge of config files: mappings merge key by key, anything else replaces."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


# --------------------------------------------------------------------------- parser

def recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The model, sparsity and the five recipe choices (shared by prune and select)."""
    p.add_argument("--model", required=True)
    p.add_argument("--sparsity", type=sparsity, required=True, help="fraction of parameters removed (see --sparsity-of)")
    p.add_argument("--method", required=True, help="scoring method (a registered score)")
    p.add_argument("--option", type=key_value, action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--heads", default="within_kv_groups", choices=["within_kv_groups", "kv_groups"],
                   help="head unit: query heads within every kv group, or whole kv groups")
    p.add_argument("--allocation", default="uniform", choices=["uniform", "global"],
                   help="uniform: same ratio per pruned layer; global: FLAP's one threshold over the pruned layers")
    p.add_argument("--budget", default="matched", choices=["matched", "per_module", "mlp_only"],
                   help="uniform allocation: matched (ours: MLP takes the remainder), per_module (LLM-Pruner) "
                        "or mlp_only (ours: heads kept); global allocation: matched (kv groups and neurons) "
                        "or mlp_only (neurons alone)")
    p.add_argument("--layers", type=_layers_arg, default="all",
                   help="pruned blocks: protocol ([4, L-2), the paper's), all, or START:END")
    p.add_argument("--sparsity-of", default="blocks", choices=["blocks", "total"],
                   help="the sparsity is a fraction of decoder-block parameters or of all parameters")
    p.add_argument("--flow", default="dense", choices=["dense", "sequential"],
                   help="dense: scores from --scores; sequential: each layer scored on the pruned model's activations")
    p.add_argument("--reconstruct", default="none", choices=["none", "bias", "refit", "paper"],
                   help="none, bias (FLAP), refit (ours, after the cut), paper (pre-pruning refit, Algorithms 1, 3, 4)")
    p.add_argument("--damp", type=nonnegative_float, default=1.0,
                   help="per-channel ridge toward the dense weights (refits); 1.0 keeps them from amplifying rounding")
    p.add_argument("--target", default="block", choices=["block", "module"],
                   help="refit target of --reconstruct refit: the dense residual stream (block) or module output")
    p.add_argument("--round-to", type=positive_int, default=1,
                   help="every pruned layer keeps a multiple of this many MLP neurons (ours; 8 suits llama.cpp's kernels)")


def build_parser() -> argparse.ArgumentParser:
    from structprune.recipe import FULL_SITE_NAMES  # standard library only: the parser stays light

    parser = argparse.ArgumentParser(prog="structprune", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="auto", help="auto (a GPU if torch sees one), cpu or cuda[:N]")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weight precision (auto: float32 on CPU, bfloat16 on GPU); statistics stay float64")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate workflow config files (file and line of each problem), without Snakemake")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_check_config)

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

    def sample_args(p):
        p.add_argument("--n-samples", type=positive_int, required=True)
        p.add_argument("--seq-len", type=positive_int, required=True)
        p.add_argument("--seed", type=seed, default=0)
        p.add_argument("--temperature", type=positive_float, default=1.0, help="selfgen only")
        p.add_argument("--top-p", type=probability, default=1.0, help="selfgen only")
        p.add_argument("--start-token", type=nonnegative_int, default=None, help="selfgen only (default: BOS)")
        p.add_argument("--drop-start", action="store_true",
                       help="selfgen only: the start token conditions the generation but is not part of the sample")

    p = sub.add_parser("data-calib", help="calibration samples: windows of a text split, self-generated text (selfgen) or random token ids (random)")
    data_args(p)
    sample_args(p)
    p.set_defaults(func=cmd_data_calib)

    p = sub.add_parser("data-heldout", help="held-out calibration samples apart from the fit sets (for select)")
    data_args(p)
    sample_args(p)
    p.add_argument("--exclude", nargs="+", required=True, help="the fit sets' sample files, whose windows are avoided")
    p.set_defaults(func=cmd_data_heldout)

    p = sub.add_parser("data-task", help="export a zero-shot task split to jsonl")
    p.add_argument("--task", required=True)
    p.add_argument("--mirror", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_data_task)

    p = sub.add_parser("calibrate", help="per-layer activation statistics (float64)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--full-sites", nargs="*", default=None, choices=FULL_SITE_NAMES,
                   help="sites whose full second moment is kept (default: all three; the others keep the diagonal)")
    p.add_argument("--no-attention-js", dest="attention_js", action="store_false",
                   help="skip the heads' attention divergences (the paper's redundancy is the only reader)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("score", help="importance score per head and neuron")
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--stats", default=None)
    p.add_argument("--option", type=key_value, action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("gradients", help="LLM-Pruner's Taylor saliencies per channel (backprop)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="calibration samples (data-calib output)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_gradients)

    p = sub.add_parser("dense-stream", help="the dense model's per-layer outputs on calibration samples (read by every refit on them)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="calibration samples (data-calib output)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="the batch size of the prune jobs that will read it")
    p.add_argument("--out", required=True, help="a folder")
    p.set_defaults(func=cmd_dense_stream)

    p = sub.add_parser("prune", help="prune with one method recipe: score x unit x allocation x flow x reconstruction")
    recipe_arguments(p)
    p.add_argument("--scores", default=None, help="dense scores (score stage)")
    p.add_argument("--stats", default=None, help="dense calibration statistics (bias compensation, dense flow)")
    p.add_argument("--data", default=None, help="calibration samples (sequential flow or refits)")
    p.add_argument("--dense-stream", default=None, help="a dense-stream folder of --model on --data: refits read it instead of running the dense layers")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("select", help="prune with each candidate of a grid; keep the lowest held-out calibration loss")
    recipe_arguments(p)
    p.add_argument("--stats", default=None, help="dense calibration statistics (dense scores, bias compensation)")
    p.add_argument("--data", default=None, help="calibration samples (sequential flow or refits)")
    p.add_argument("--dense-stream", default=None, help="a dense-stream folder of --model on --data: refits read it instead of running the dense layers")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--grid", type=key_value, action="append", default=[], metavar="CHOICE=V1,V2",
                   help="alternatives for a recipe choice (or options.NAME); every combination is a candidate")
    p.add_argument("--heldout", required=True, help="held-out calibration samples (never evaluation data)")
    p.add_argument("--chosen-in", default=None, metavar="CHECKPOINT",
                   help="a select checkpoint of the same method at another sparsity: run only the candidate chosen there")
    p.add_argument("--rechoose", action="append", default=[], metavar="KEY",
                   help="with --chosen-in: a grid key chosen again here among all its values (repeatable)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("evaluate", help="perplexity and zero-shot accuracy of a checkpoint")
    p.add_argument("--model", required=True)
    p.add_argument("--ppl", type=key_path, action="append", default=[], metavar="DATASET=TOKENS")
    p.add_argument("--task", type=key_path, action="append", default=[], metavar="TASK=JSONL")
    p.add_argument("--seq-len", type=positive_int, default=128)
    p.add_argument("--max-tokens", type=positive_int, default=None)
    p.add_argument("--limit", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--model-name", required=True)
    p.add_argument("--method", default="dense")
    p.add_argument("--calib", default="none")
    p.add_argument("--sparsity", type=nonnegative_int, default=0)
    p.add_argument("--stage", default="dense", choices=["dense", "pruned", "recovered"])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("speed", help="prefill/decode throughput and memory of a checkpoint beside the dense model")
    p.add_argument("--model", required=True, help="the checkpoint folder")
    p.add_argument("--dense", required=True, help="the dense model's checkpoint folder")
    p.add_argument("--repeats", type=positive_int, default=2)
    p.add_argument("--new-tokens", type=positive_int, default=16)
    p.add_argument("--prefill", type=positive_int, nargs=2, default=[4, 128], metavar=("BATCH", "LENGTH"))
    p.add_argument("--decode-batches", type=positive_int, nargs="+", default=[1, 8])
    p.add_argument("--gguf", default=None, help="also time the checkpoint's GGUF export in llama.cpp beside --dense-gguf")
    p.add_argument("--dense-gguf", default=None)
    p.add_argument("--llamacpp-new-tokens", type=positive_int, default=64)
    p.add_argument("--llamacpp-repeats", type=positive_int, default=9)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_speed)

    p = sub.add_parser("export", help="a checkpoint as a GGUF file for llama.cpp (loaded and run there as a check)")
    p.add_argument("--model", required=True, help="the checkpoint folder")
    p.add_argument("--out", required=True, help="the .gguf file")
    p.add_argument("--out-json", required=True, help="what was written and the llama.cpp check")
    p.add_argument("--type", default="f16", choices=["f32", "f16", "q8_0"])
    p.add_argument("--source", default=None, help="the model's source in config: a GGUF source's tokenizer is copied")
    p.add_argument("--tokenizer-pre", default=None, help="llama.cpp pre-tokenizer name when the source is not GGUF")
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--new-tokens", type=positive_int, default=8)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate-gguf", help="perplexity of a GGUF export in llama.cpp (the evaluate protocol)")
    p.add_argument("--gguf", required=True)
    p.add_argument("--checkpoint-eval", default=None, help="the checkpoint's own eval JSON, recorded for the comparison")
    p.add_argument("--ppl", type=key_path, action="append", default=[], metavar="DATASET=TOKENS")
    p.add_argument("--seq-len", type=positive_int, default=128)
    p.add_argument("--max-tokens", type=positive_int, default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate_gguf)

    p = sub.add_parser("report", help="comparison table and plot from evaluation JSONs")
    p.add_argument("--evals", nargs="+", required=True)
    p.add_argument("--speeds", nargs="*", default=[], help="speed JSONs of the checkpoints (stage speed)")
    p.add_argument("--exports", nargs="*", default=[], help="export JSONs (stage export)")
    p.add_argument("--gguf-evals", nargs="*", default=[], help="llama.cpp perplexity JSONs (stage evaluate_gguf)")
    p.add_argument("--gguf-csv", default=None)
    p.add_argument("--gguf-md", default=None, help="write the GGUF export table here (with --gguf-csv)")
    p.add_argument("--plot-accuracy", default=None, help="also plot average accuracy with error bars per sparsity")
    p.add_argument("--plot-tradeoff", default=None, help="also plot perplexity against measured decode speed-up")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--tex", default=None, help="also write the table as LaTeX (booktabs)")
    p.add_argument("--html", default=None, help="also write the table as a self-contained HTML page")
    p.add_argument("--plot", default=None)
    p.add_argument("--title", default="structprune comparison")
    p.add_argument("--note", default="")
    p.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark TSVs to summarise")
    p.add_argument("--selection", type=key_value, action="append", default=[], metavar="METHOD:SPARSITY=CHECKPOINT",
                   help="a select checkpoint whose candidates go into the selection table")
    p.add_argument("--selection-csv", default=None)
    p.add_argument("--selection-md", default=None)
    p.add_argument("--label", type=key_value, action="append", default=[], metavar="METHOD:STAGE=LABEL",
                   help="the row name of a method's stage in the table")
    p.add_argument("--run-record", default=None, help="also write what the run used (config, commit, versions) here")
    p.add_argument("--run-config", default="{}", help="the run's configuration as JSON (for --run-record)")
    p.add_argument("--config-files", nargs="*", default=[], help="the config files the run read (for --run-record)")
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
    except (ValueError, FileNotFoundError, NotImplementedError, ImportError) as error:
        log.error("%s failed: %s", args.command, error)
        return 2
    log.info("%s done in %.1f s", args.command, time.time() - started)
    return 0
