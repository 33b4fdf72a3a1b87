"""The text above the tables: what each column means, how sure it is, and what the run cost.
Written by the report code so it describes the table it sits above."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from structprune.io.integrity import read_stage_json
from structprune.report.software import checkpoint_manifests, software_note
from structprune.report.speedcols import LEVEL
from structprune.report.tables import SIZE_TOLERANCE

SPEED_NOTE = (
    "Speed and memory (stage `speed`, structprune.evaluation.speed), measured on the machine that ran the job, each checkpoint "
    "beside the dense model in one process while no other job ran (the job takes every core Snakemake has; the "
    "measurement runs on `evaluation.speed.threads`), their measurements alternating (the order flipped every "
    "repeat, after discarded warm-up passes): `Prefill x` is tokens/s of one forward pass over a batch of prompts, "
    "`Decode x b1` and `Decode x bN` new tokens/s of greedy generation with the KV cache at batch 1 and N, `Peak mem x` "
    "weights plus the peak memory rise while generating at batch N; each as checkpoint / dense (> 1: faster or larger). "
    "`Weights (MB)` is the bytes of parameters and buffers; `Dense decode b1 (tok/s)` the dense model's own figure in "
    "that job.\n\n"
    "Speed intervals: a speed cell is the median of the paired per-repeat ratios (checkpoint repeat k / dense repeat k) "
    "and, in parentheses, a distribution-free interval for that median from order statistics: the j-th smallest "
    "to the j-th largest ratio, with the largest j whose coverage 1 - 2 P(Binomial(n, 1/2) < j) is at least "
    f"{100 * LEVEL:.0f} % (n repeats; 6 give min-max at 96.9 %, 12 the 3rd to the 10th at 96.1 %); with fewer repeats "
    "than 6 it is min-max and the cell states its coverage. `~` marks an interval that covers 1 (no speed-up or "
    "slow-down shown), as for the table's other differences.\n\n"
    "Bounds: `Prefill bound x` and `Decode bound x` are the largest speed-ups the weights allow (roofline: a pass "
    "takes at least its bytes over the memory bandwidth and its multiply-adds over the peak compute, so a ratio of "
    "times is at most the larger of the two ratios, at the same efficiency per byte and per multiply-add). Decode (every batch): the bytes of the weights a step reads "
    "(every matrix once per token; the input embedding a row, unless it is the tied output layer) and the "
    "multiply-adds per token of the blocks' matrices and the output layer. Prefill: the multiply-adds of a prompt "
    "of the measured length, blocks' matrices per token, the attention scores (QK^T and AV, 2 x query width x "
    "position per layer) and the last token's logits. Decode's attention over its short context and the KV cache's "
    "bytes are left out (under 1 % here), which makes the bounds slightly generous. A `!` marks a ratio whose whole "
    "interval lies above its bound by more than the interval's half-width: a measurement fault, not a gain."
)


LLAMACPP_NOTE = (
    "`llama.cpp prefill x` and `llama.cpp decode x`: the same checkpoint's GGUF export (stage `export`) timed in "
    "llama.cpp in the same job as the dense export, alternating: tokens/s of one prompt and of single decode "
    "steps at batch 1, checkpoint / dense, as median paired ratio with its interval, `~` and `!` as above (the bounds "
    "from the two GGUF files' tensor bytes and shapes, f16 matrices with f32 norms: within a percent of the "
    "columns'); `Dense llama.cpp decode (tok/s)` is the dense export's absolute figure."
)


GGUF_NOTE = (
    "Every checkpoint exported to GGUF (stage `export`, structprune.export.gguf): `llama` for uniform widths, `deci` "
    "for per-layer widths. Each file was loaded in llama.cpp (llama-cpp-python) and continued a fixed prompt greedily; "
    "`Greedy agrees` says whether its tokens equal transformers' from the checkpoint (float16 weights may flip a "
    "near-tie). Perplexities (first rows of the evaluation protocol, at the speed sparsities): the checkpoint's "
    "(transformers, float32) and the export's (llama.cpp), and their difference."
)

NO_GGUF_NOTE = ("No checkpoint was exported in this run (`export.enabled` is false in its config), so this table "
                "is empty.")


RECOVERY_NOTE = (
    "Rounding: the paper's pre-pruning recovery (`reconstruct: paper`, the w/ remedy rows) fits rounding into its "
    "weights by least squares, and at `recover.damp` 0.01 that flipped near-tied units on a CPU with other float32 "
    "kernels (WikiText-2 at 35 %: 592.14 against 566.97). At the damping used here (1.0, chosen on held-out "
    "calibration text) the plans are the same and every perplexity moves by less than 1e-5 relative under another "
    "instruction set and 1e-7 input perturbations: `results/bench/recovery_stability.md`, "
    "`scripts/recovery_stability.py`."
)


def uses_paper_recovery(evals: list[dict]) -> bool:
    """Whether a row of the table comes from the paper's recovery (its checkpoint's recipe)."""
    for result in evals:
        manifest = Path(result.get("checkpoint", "")) / "manifest.json"
        if result.get("stage") == "recovered" and manifest.is_file():
            if read_stage_json(manifest).get("parameters", {}).get("recipe", {}).get("reconstruct") == "paper":
                return True
    return False


SIGNIFICANCE_NOTE = (
    "Uncertainty: `± se` after a task's accuracy is the standard error of its mean over the scored items (sample "
    "standard deviation over the square root of their number); after the Average (`Avg se` in the CSV), the standard "
    "error of the average (per-task standard errors, tasks independent); `... 95% CI` are perplexity intervals from 10,000 bootstrap resamples of the evaluation "
    "windows. `vs dense` and `vs best peer` are paired differences on the same items (accuracy, points) or windows "
    "(perplexity, %) against the best peer, named in the cell: the strongest non-`ours` row (highest average, "
    f"lowest perplexity) of the same sparsity whose removed share of block parameters is within {SIZE_TOLERANCE} points of the "
    "row's own (a row that misses its nominal size is compared with rows of its actual size only; no such peer: "
    "empty). A `~` marks a difference that is not significant at 95 % (its paired bootstrap interval, "
    "10,000 resamples of items within each task or of windows, seed 0, covers zero)."
)


SEARCH_STAGES = ("disp_search",)  # jobs that train something for one row (DISP-LLM's hypernetwork)


def compute_time_summary(benchmark_paths: list[str | os.PathLike]) -> str:
    """Wall time per stage, summed over the Snakemake benchmark files that exist."""
    totals: dict[str, float] = {}
    searches = []  # a search is a row's own training cost: each job's time and peak memory
    for path in benchmark_paths:
        path = Path(path)
        if not path.is_file():
            continue
        parts = path.parts
        stage = parts[parts.index("benchmarks") + 1] if "benchmarks" in parts[:-1] else path.parent.name
        record = pd.read_csv(path, sep="\t").iloc[-1]
        totals[stage] = totals.get(stage, 0.0) + float(record["s"])
        if stage in SEARCH_STAGES:
            searches.append(f"{parts[-2]} at {path.stem.removeprefix('s')} %: {float(record['s']) / 60:.1f} min, "
                            f"peak memory {float(record['max_rss']) / 1024:.1f} GB")
    if not totals:
        return ""
    parts = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in totals.items())
    summary = f"Compute time of the jobs behind this table (Snakemake benchmarks): {parts}; total {sum(totals.values()):.0f} s."
    if searches:
        summary += " Searches (a row's training cost, each job's wall time and peak memory): " + "; ".join(searches) + "."
    return summary



SELECTION_NOTE = (
    "Candidates of each method with a select section: the method's recipe with the listed overrides, "
    "pruned on its calibration samples; the held-out loss is the mean next-token loss on held-out "
    "calibration text (windows no fit sample covers; never evaluation data). The lowest is kept."
)


def table_header(title: str, note: str, table: pd.DataFrame, eval_paths: list[str], benchmark_paths: list[str]) -> str:
    """The comparison table's header: its title, the run's note (the recipes, from the config),
    then a note for each kind of column the table has and what the run cost."""
    header = f"# {title}\n\n{note}" if note else f"# {title}"
    if "Avg se" in table or any(column.endswith("95% CI") for column in table.columns):
        header += "\n\n" + SIGNIFICANCE_NOTE
    if "Prefill x" in table:
        header += "\n\n" + SPEED_NOTE
    evals = [read_stage_json(path) for path in eval_paths]
    if uses_paper_recovery(evals):
        header += "\n\n" + RECOVERY_NOTE
    if "llama.cpp decode x" in table:
        header += "\n\n" + LLAMACPP_NOTE
    if benchmark_paths:
        header += "\n\n" + compute_time_summary(benchmark_paths)
    if software := software_note(checkpoint_manifests([e["checkpoint"] for e in evals if e.get("checkpoint")])):
        header += "\n\n" + software
    return header
