"""The speed stage: prefill/decode throughput and memory of a checkpoint beside the dense model."""

from __future__ import annotations

import logging

from structprune.stages.argtypes import (
    positive_int,
)
from structprune.stages.common import (
    check_gguf,
    load_model,
)

log = logging.getLogger("structprune")

HELP = "prefill/decode throughput and memory of a checkpoint beside the dense model"


def arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="the checkpoint folder")
    parser.add_argument("--dense", required=True, help="the dense model's checkpoint folder")
    parser.add_argument("--repeats", type=positive_int, default=6)
    parser.add_argument("--new-tokens", type=positive_int, default=16)
    parser.add_argument("--prefill", type=positive_int, nargs=2, default=[4, 128], metavar=("BATCH", "LENGTH"))
    parser.add_argument("--decode-batches", type=positive_int, nargs="+", default=[1, 8])
    parser.add_argument("--gguf", default=None, help="also time the checkpoint's GGUF export in llama.cpp beside --dense-gguf")
    parser.add_argument("--dense-gguf", default=None)
    parser.add_argument("--llamacpp-new-tokens", type=positive_int, default=64)
    parser.add_argument("--llamacpp-repeats", type=positive_int, default=12)
    parser.add_argument("--out", required=True)


def run(args) -> None:
    """Prefill/decode throughput and memory of a checkpoint beside the dense model."""
    import torch

    from structprune.evaluation.bounds import model_cost
    from structprune.evaluation.speed import SpeedProtocol, measure_pair, speed_report
    from structprune.io.artifacts import write_stage_json

    torch.manual_seed(0)
    protocol = SpeedProtocol(prefill_batch=args.prefill[0], prefill_length=args.prefill[1], new_tokens=args.new_tokens,
                             decode_batches=tuple(args.decode_batches), repeats=args.repeats)
    models = {"dense": load_model(args, args.dense, "whole")[0], "checkpoint": load_model(args, args.model, "whole")[0]}
    costs = {name: model_cost(model) for name, model in models.items()}
    report = speed_report(measure_pair(models, protocol), bounds=speed_bounds(costs, protocol))
    for name, cost in costs.items():
        report[name]["cost"] = cost.to_json()
    llamacpp = llamacpp_speed(args, torch.get_num_threads()) if args.gguf else None
    if llamacpp:
        log.info("llama.cpp: %s, ratios %s", llamacpp["timing"], {k: round(v, 3) for k, v in llamacpp["ratio_to_dense"].items()})
    for name, figures in report.items():
        log.info("%s: prefill %.0f tok/s, decode %s tok/s, peak %.0f MB, ratios %s", name,
                 figures["prefill_tokens_per_s"], figures["decode_tokens_per_s"],
                 figures["peak_generation_bytes"] / 2**20, {k: round(v, 3) for k, v in figures["ratio_to_dense"].items()})
    write_stage_json(args.out, {"checkpoint": args.model, "dense": args.dense, "protocol": protocol.to_json(),
                                "threads": torch.get_num_threads(), "timing": report,
                                **({"llamacpp": llamacpp} if llamacpp else {})}, "speed")


def speed_bounds(costs: dict, protocol) -> dict:
    """name -> {ratio key: the largest ratio its weights allow against the dense model's}."""
    from structprune.evaluation.bounds import decode_bound, prefill_bound

    dense = costs["dense"]
    return {name: {"prefill_tokens_per_s": prefill_bound(dense, cost, protocol.prefill_length),
                   **{f"decode_tokens_per_s_batch{b}": decode_bound(dense, cost) for b in protocol.decode_batches}}
            for name, cost in costs.items()}


def llamacpp_speed(args, threads: int) -> dict:
    """The two GGUF exports timed in llama.cpp: figures, paired ratios with intervals, bounds
    from the files' tensors."""
    from structprune.evaluation.bounds import decode_bound, prefill_bound, tensor_cost
    from structprune.evaluation.speed import ratio_entry
    from structprune.export.llamacpp import LlamaCppProtocol, gguf_tensors, measure_speed

    check_gguf(args.gguf)
    check_gguf(args.dense_gguf)
    protocol = LlamaCppProtocol(new_tokens=args.llamacpp_new_tokens, repeats=args.llamacpp_repeats)
    measured = measure_speed({"dense": args.dense_gguf, "checkpoint": args.gguf}, protocol, threads)
    dense, pruned = tensor_cost(gguf_tensors(args.dense_gguf)), tensor_cost(gguf_tensors(args.gguf))
    bounds = {"prefill_tokens_per_s": prefill_bound(dense, pruned, protocol.prefill_length),
              "decode_tokens_per_s": decode_bound(dense, pruned)}
    intervals = {k: ratio_entry(measured["checkpoint"]["repeats"][k], measured["dense"]["repeats"][k], bound)
                 for k, bound in bounds.items()}
    return {"protocol": protocol.to_json(), "dense_gguf": args.dense_gguf, "gguf": args.gguf, "timing": measured,
            "cost": {"dense": dense.to_json(), "checkpoint": pruned.to_json()},
            "ratio_to_dense": {k: entry["median"] for k, entry in intervals.items()}, "ratio_intervals": intervals}
