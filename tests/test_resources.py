"""The memory a job asks for covers what the stage benchmark measured, projected to LLaMA-7B.

The committed LLaMA-7B-width benchmarks (two decoder layers, at two token counts) are
projected to 32 layers and to the paper config's token counts; every benchmarked stage's
request (structprune.spec.resources) must cover that peak without asking for more than twice it.
"""

import json

import pytest
from workflow_helpers import REPO

from structprune.spec.resources import STAGE_COST, memory_mb, weights_mb
from test_bench import load_bench

BENCH = REPO / "results" / "bench"
PARAMS_7B = 6.74e9
PAPER_RECOVERY_TOKENS = 1024 * 128  # config/paper.yaml: the remedy sets, 1024 x 128
PIPELINE_STAGE = {  # pipeline stage: the bench stages its jobs run, pruned copies held beside them, streams tokens
    "calibrate": (["calibrate"], 0, True),
    "score": (["score"], 0, False),
    "dense_stream": (["dense_stream"], 0, True),
    "prune": (["prune_dense", "sequential", "refit", "recovery", "recovery_live"], 0, True),
    "select": (["refit"], 2, True),  # the candidate being pruned and the best so far, beside the dense model
    "evaluate": (["perplexity"], 0, False),  # evaluation windows come in fixed batches
}


def bench_rows(name: str) -> tuple[dict, dict]:
    summary = json.loads((BENCH / f"{name}.json").read_text())
    return summary["spec"], {row["stage"]: row for row in summary["stages"]}


def kb_per_token(stage: str) -> float:
    """Memory a stage holds per calibration token: the slope of its working set (peak minus the
    memory after loading) between the two token counts."""
    spec_a, a = bench_rows("llama7b-width")
    spec_b, b = bench_rows("llama7b-width-32x128")
    tokens_a, tokens_b = spec_a["samples"] * spec_a["seq_len"], spec_b["samples"] * spec_b["seq_len"]
    if stage not in b:
        return 0.0
    grown = (b[stage]["peak_rss_mb"] - b[stage]["rss_after_load_mb"]) - (a[stage]["peak_rss_mb"] - a[stage]["rss_after_load_mb"])
    return max(0.0, grown * 1024 / (tokens_b - tokens_a))  # the working set's growth: the runs' baselines may differ


def projected_peak_mb(stage: str, tokens: int) -> float:
    bench = load_bench()
    spec, rows = bench_rows("llama7b-width")
    measured_tokens = spec["samples"] * spec["seq_len"]
    return (bench.projected_peak_mb(rows[stage], spec["layers"])
            + kb_per_token(stage) * max(0, tokens - measured_tokens) / 1024)


@pytest.mark.parametrize(("pipeline_stage", "tokens"), [
    (stage, tokens) for stage, (_, _, streams) in sorted(PIPELINE_STAGE.items())
    for tokens in ([1024, PAPER_RECOVERY_TOKENS] if streams else [1024])
])
def test_requests_cover_the_benchmarked_peak_at_7b_without_doubling_it(pipeline_stage, tokens):
    bench_stages, copies, _ = PIPELINE_STAGE[pipeline_stage]
    needed = max(projected_peak_mb(s, tokens) for s in bench_stages) + copies * weights_mb(PARAMS_7B, "float32")
    asked = memory_mb(pipeline_stage, PARAMS_7B, "float32", tokens=tokens)
    assert needed <= asked <= 2 * needed, (pipeline_stage, tokens, round(needed), asked)


def test_the_paper_recovery_holds_the_most_per_token():
    """The dense layer's taps of every batch stay for the refits (run live, or read from the
    dense stream); calibration sums its moments batch by batch (what it holds per token is the
    captured inputs and forward buffers)."""
    assert min(kb_per_token("recovery"), kb_per_token("recovery_live")) > 2 * kb_per_token("calibrate")
    for stage, (bench_stages, _, _) in PIPELINE_STAGE.items():
        assert STAGE_COST[stage].kb_per_token >= max([kb_per_token(s) for s in bench_stages if s != "perplexity"], default=0), stage


def test_on_a_gpu_the_activations_are_not_asked_of_the_host():
    on_host = memory_mb("prune", PARAMS_7B, "float16", tokens=PAPER_RECOVERY_TOKENS)
    on_gpu = memory_mb("prune", PARAMS_7B, "float16", tokens=PAPER_RECOVERY_TOKENS, on_gpu=True)
    assert on_gpu == memory_mb("prune", PARAMS_7B, "float16") < on_host
    assert memory_mb("prune", PARAMS_7B, "float16") < memory_mb("prune", PARAMS_7B, "float32")


def test_a_float16_model_still_gets_room_for_float32_statistics():
    """Calibration keeps every layer's statistics (float32/float64 whatever the weights are)
    until it writes them: a float16 7B model's request covers its weights and all of them."""
    spec, rows = bench_rows("llama7b-width")
    statistics = rows["calibrate"]["stats_mb"] / spec["layers"] * 32
    assert memory_mb("calibrate", PARAMS_7B, "float16", on_gpu=True) > weights_mb(PARAMS_7B, "float16") + statistics + 2000
