"""What a pipeline job asks a scheduler for: host memory and minutes, scaled with its model.

Stdlib only: the workflow imports it while planning the DAG.

Host memory of a job = ``BASE_MB`` (Python, torch, tokenizer, buffers) + ``weights_factor`` x
the model's weights in their dtype + ``float32_factor`` x the weights' float32 size (what
does not shrink with a float16 model: statistics and least-squares systems, float32/float64
and as large as a layer's weight matrices squared over the width) + ``kb_per_token`` x the
calibration tokens the job streams (the dense and pruned streams and the per-layer
activations the refits keep), the last scaled with the model's width. For the stages the stage benchmark runs
(``scripts/bench_stages.py``), the factors come from its LLaMA-7B-width figures
(``results/bench/llama7b-width*.json``), rounded up with a margin: a layer-wise stage holds
the model once plus one layer's working set (least-squares systems, a layer copy), which at
7B width is a fraction of the weights; calibration also holds every layer's statistics
until it writes them. ``tests/test_resources.py`` projects the benchmark to 32 layers and
checks that every request covers it without asking for more than twice as much. Stages
the benchmark does not run (model conversion, self-generation, gradients, export, speed)
keep factors read off the embedded model's Snakemake benchmarks (max RSS), rounded up.

On a GPU the layer's working set and the token activations sit on the device (a job asks
for one GPU); the host then holds the weights (in float16/bfloat16) and the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASE_MB = 2000
CPU_SLOWDOWN = 20  # minutes on 2 CPU cores per minute on one GPU, for the runtime request
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SEVEN_B_PARAMS = 6.74e9  # the width the per-token figure was measured at


@dataclass(frozen=True)
class StageCost:
    weights_factor: float  # copies of the weights, in their dtype
    float32_factor: float  # statistics and working set, in multiples of the float32 weights
    minutes_per_billion: float  # on one GPU
    kb_per_token: float = 0.0  # at LLaMA-7B width, float32 activations
    source: str = "embedded run's Snakemake benchmarks"  # where the factors were read


# Factors of the benchmarked stages, from results/bench/llama7b-width.json projected to 32
# layers in float32, and per calibration token from its difference to
# llama7b-width-32x128.json (tests/test_resources.py recomputes both and checks the margin).
# Projected peaks over 2 GB, in float32 weights: calibrate 1.44 (the model + 0.48 of
# statistics with every site's matrix) + 28 KB per token (66 KB in the run before); score
# 1.00; dense_stream 1.03 + 150 KB per token (every token's two residual updates of one
# layer); prune 1.19 (the paper's recovery, the largest of the flows) + 254 KB per token (the
# dense layer's taps of every batch, read from the dense stream; 103 KB running it); select
# 3.10 (a refit beside the dense model and two pruned copies: the candidate and the best so
# far) + 176 KB per token; evaluate 0.95.
STAGE_COST = {
    "model": StageCost(3.0, 0, 5),
    "data_calib": StageCost(2.0, 0, 10),
    "calibrate": StageCost(1.1, 0.65, 10, kb_per_token=80, source="bench: calibrate"),
    "gradients": StageCost(5.0, 0, 20),
    "score": StageCost(1.1, 0.15, 2, source="bench: score"),
    "dense_stream": StageCost(1.1, 0.0, 5, kb_per_token=180, source="bench: dense_stream"),
    "prune": StageCost(1.1, 0.4, 30, kb_per_token=320, source="bench: prune_dense, sequential, refit, recovery, recovery_live"),
    "select": StageCost(3.1, 0.4, 240, kb_per_token=180, source="bench: refit, with two pruned copies"),
    # DISP-LLM's search: the frozen model plus one batch's activations kept for the backward pass
    # (about 34 values per token and layer at each of 32 layers, float32, at 7B width); the minutes
    # are for the reference's 10000 steps (2.4 h on 2 A100s for 7B, the paper).
    "disp_search": StageCost(1.2, 0, 45, kb_per_token=18000, source="estimate: backprop activations of one batch"),
    # SLEB's / BlockPruner's full greedy order: the prune stage's layer-by-layer model plus the hidden
    # states entering every layer for every batch (kept so a trial reruns only the layers after it)
    "depth_order": StageCost(1.1, 0, 120, kb_per_token=600, source="estimate: hidden states entering each of 33 layers, float32, 7B width"),
    "evaluate": StageCost(1.25, 0, 60, source="bench: perplexity"),
    "export": StageCost(3.0, 0, 5),
    "speed": StageCost(4.0, 0, 60),  # the dense and the pruned model in torch, and both GGUF files in llama.cpp
}


def weights_mb(n_params: float, dtype: str) -> float:
    return n_params * DTYPE_BYTES[dtype] / 2**20


def memory_mb(stage: str, n_params: float, dtype: str, tokens: int = 0, on_gpu: bool = False) -> int:
    """Host memory (MB) a stage's job asks for, before retries double it. `tokens`: the
    calibration tokens it streams; on a GPU their activations are on the device, not here."""
    cost = STAGE_COST[stage]
    width_scale = math.sqrt(n_params / SEVEN_B_PARAMS)  # activations per token grow with the width
    activations = 0.0 if on_gpu else cost.kb_per_token * width_scale * tokens / 1024 * DTYPE_BYTES[dtype] / 4
    weights = cost.weights_factor * weights_mb(n_params, dtype) + cost.float32_factor * weights_mb(n_params, "float32")
    return int(math.ceil(BASE_MB + weights + activations))


def runtime_minutes(stage: str, n_params: float, on_gpu: bool) -> int:
    slowdown = 1 if on_gpu else CPU_SLOWDOWN
    return int(15 + STAGE_COST[stage].minutes_per_billion * n_params / 1e9 * slowdown)
