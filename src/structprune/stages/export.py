"""The export stage: a checkpoint as a GGUF file, checked by running it in llama.cpp."""

from __future__ import annotations

import logging
from pathlib import Path

from structprune.spec.catalog import GGUF_TYPES
from structprune.stages.argtypes import (
    positive_int,
)
from structprune.stages.common import (
    Timer,
    load_model,
)

log = logging.getLogger("structprune")

HELP = "a checkpoint as a GGUF file for llama.cpp (loaded and run there as a check)"


def arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="the checkpoint folder")
    parser.add_argument("--out", required=True, help="the .gguf file")
    parser.add_argument("--out-json", required=True, help="what was written and the llama.cpp check")
    parser.add_argument("--type", default="f16", choices=GGUF_TYPES)
    parser.add_argument("--source", default=None, help="the model's source in config: a GGUF source's tokenizer is copied")
    parser.add_argument("--tokenizer-pre", default=None, help="llama.cpp pre-tokenizer name when the source is not GGUF")
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--new-tokens", type=positive_int, default=8)


def run(args) -> None:
    """A checkpoint as a GGUF file for llama.cpp, checked by loading it there and generating."""
    import torch

    from structprune.export.gguf import export_gguf
    from structprune.export.llamacpp import greedy_tokens, require_llama_cpp
    from structprune.io.artifacts import sha256_path, write_stage_json
    from structprune.model.families import export_problem
    from structprune.model.sources import resolve_model_source

    require_llama_cpp()  # before the export: the file is only done once llama.cpp has run it
    resolved = resolve_model_source(args.source) if args.source else None
    source_gguf = resolved.gguf_path if resolved else None
    model, tokenizer = load_model(args, args.model, "host")
    if problem := export_problem(model.config.to_dict(), args.model):
        raise ValueError(f"{problem}: no GGUF file is written (the workflow skips this export at planning)")
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
