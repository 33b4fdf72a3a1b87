"""The evaluate-gguf stage: perplexity of a GGUF export in llama.cpp."""

from __future__ import annotations

import logging

from structprune.spec.catalog import PERPLEXITY_WINDOWS
from structprune.stages.argtypes import (
    key_path,
    positive_int,
)
from structprune.stages.common import (
    Timer,
    check_gguf,
)

log = logging.getLogger("structprune")

HELP = "perplexity of a GGUF export in llama.cpp (the evaluate protocol)"


def arguments(parser) -> None:
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--checkpoint-eval", default=None, help="the checkpoint's own eval JSON, recorded for the comparison")
    parser.add_argument("--ppl", type=key_path, action="append", default=[], metavar="DATASET=TOKENS")
    parser.add_argument("--seq-len", type=positive_int, default=128)
    parser.add_argument("--max-tokens", type=positive_int, default=None)
    parser.add_argument("--windows", choices=PERPLEXITY_WINDOWS, default="first",
                        help="which max_tokens // seq_len windows: the first, or evenly spaced over the split")
    parser.add_argument("--out", required=True)


def run(args) -> None:
    """Perplexity of a GGUF export in llama.cpp, on the evaluate stage's protocol."""
    import torch

    from structprune.export.llamacpp import perplexity
    from structprune.io.artifacts import write_stage_json
    from structprune.io.checkpoint import load_tensors

    check_gguf(args.gguf)
    timer = Timer()
    protocol = {"seq_len": args.seq_len, "max_tokens": args.max_tokens, "windows": args.windows}
    result = {"gguf": args.gguf, "checkpoint_eval": args.checkpoint_eval, "protocol": protocol, "perplexity": {}}
    for name, path in args.ppl:
        stream = load_tensors(path)["input_ids"]
        result["perplexity"][name] = perplexity(args.gguf, stream, args.seq_len, args.max_tokens,
                                                threads=torch.get_num_threads(), placement=args.windows)
        log.info("%s perplexity in llama.cpp %.3f", name, result["perplexity"][name]["ppl"])
    write_stage_json(args.out, {**result, "timing": {"perplexity_s": timer.elapsed()}}, "evaluate-gguf")
