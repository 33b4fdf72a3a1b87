"""Write the config that prunes your own model with one method at one sparsity (`make prune`)."""

from __future__ import annotations

import logging

log = logging.getLogger("structprune")

HELP = "write a one-model config: your model, one method of a base config, one sparsity (percent)"


def arguments(parser) -> None:
    parser.add_argument("--source", required=True, help="a Hugging Face folder, gguf:FILE, gguf-package:NAME or a Hub id")
    parser.add_argument("--method", default="flap", help="a method key of the base config (default: flap)")
    parser.add_argument("--sparsity", type=int, default=20, help="percent of decoder-block parameters removed (default 20)")
    parser.add_argument("--name", default="mine", help="the model's name in result folders and the table")
    parser.add_argument("--tokenizer-pre", default=None,
                        help="llama.cpp's pre-tokenizer for the GGUF export of a non-GGUF source (llama-bpe for "
                             "Llama-3, qwen2 for Qwen); without it such a source is not exported")
    parser.add_argument("--base", default="config/benchmark.yaml",
                        help="the config whose method and protocol are used (default: the benchmark's, every method)")
    parser.add_argument("--out", required=True)


def run(args) -> None:
    import copy
    from pathlib import Path

    import yaml

    from structprune.io.artifacts import atomic_file
    from structprune.spec.configcheck import validate_config
    from structprune.spec.configfile import read_config_file
    from structprune.spec.ownmodel import own_model_config

    base = read_config_file(args.base)
    validate_config(copy.deepcopy(base))  # validation fills defaults in place; the file keeps what was chosen
    config = own_model_config(base, args.source, args.method, args.sparsity, args.name, args.tokenizer_pre)
    validate_config(copy.deepcopy(config))
    with atomic_file(args.out) as tmp:
        Path(tmp).write_text(f"# made by `python -m structprune own-config` from {args.base}\n"
                             + yaml.safe_dump(config, sort_keys=False))
    if not config["export"]["enabled"]:
        log.warning("no GGUF export: %s is not a GGUF source; pass --tokenizer-pre (TOKENIZER_PRE=...) to export it",
                    args.source)
    log.info("wrote %s: %s with %s at %d %%; run it with `make run CONFIG=%s`", args.out, args.name, args.method,
             args.sparsity, args.out)

