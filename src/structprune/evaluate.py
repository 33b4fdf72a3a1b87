"""Evaluation: perplexity on token streams and lm-eval zero-shot accuracy.

Perplexity protocol (LLM-Pruner ``LLMPruner/datasets/ppl_dataset.py`` and
``LLMPruner/evaluator/ppl.py``, which FLAP's tables follow): the evaluation split
(WikiText-2 test, PTB validation) is joined with blank lines and tokenised once
(see `structprune.data`); it is cut into consecutive non-overlapping windows of
``seq_len`` tokens (the tail shorter than a window is dropped); each window is
scored independently, every token but the first predicted from its prefix
inside the window; PPL = exp(mean token NLL over all windows). No BOS is
prepended to windows (a LLaMA tokenizer gives the stream one BOS at its start).
``max_tokens`` keeps only the first windows, for quick runs; the JSON records
how many tokens were scored.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from structprune.uncertainty import mean_stderr
from structprune.windows import perplexity_windows

log = logging.getLogger(__name__)


@torch.no_grad()
def perplexity(
    model: nn.Module, stream: torch.Tensor, seq_len: int = 128, max_tokens: int | None = None,
    batch_size: int = 8, progress: bool = True,
) -> dict:
    windows = perplexity_windows(stream, seq_len, max_tokens)
    nll_sum, count, window_nll = 0.0, 0, []
    for start in tqdm(range(0, windows.shape[0], batch_size), desc="perplexity", disable=not progress):
        batch = windows[start : start + batch_size].to(model.device)
        logits = model(batch, use_cache=False).logits[:, :-1].float()
        nll = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
        ).reshape(batch.shape[0], -1)
        nll_sum += float(nll.sum())
        count += batch[:, 1:].numel()
        window_nll += nll.double().mean(dim=1).tolist()
    return {
        "ppl": math.exp(nll_sum / count),
        "windows": int(windows.shape[0]),
        "seq_len": seq_len,
        "tokens_scored": count,
        "window_nll": [round(v, 6) for v in window_nll],  # mean NLL per window: the table's bootstrap intervals
    }


def zero_shot(
    model: nn.Module, tokenizer, task_files: dict[str, Path], limit: int | None, batch_size: int = 8,
) -> tuple[dict[str, dict], int]:
    """lm-eval accuracy of the builtin tasks on local files: ({task: {acc, acc_norm, n}}, tokens
    forwarded). Log-likelihoods come from `PrefixSharingLM` (each item's context computed once;
    the same answers as lm-eval's HFLM); tasks, prompts and metrics are lm-eval's."""
    from lm_eval import evaluator

    from structprune.prefixlm import PrefixSharingLM
    from structprune.tasks import local_task_config, task_manager

    if not task_files:
        return {}, 0
    manager = task_manager(list(task_files))
    configs = [local_task_config(name, path, manager) for name, path in task_files.items()]
    lm = PrefixSharingLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    results = evaluator.simple_evaluate(
        model=lm, tasks=configs, task_manager=manager, limit=limit, num_fewshot=0,
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
        bootstrap_iters=0, log_samples=True,
    )
    out = {}
    for name in task_files:
        metrics = results["results"][name]
        out[name] = {
            "acc": metrics.get("acc,none"),
            "acc_norm": metrics.get("acc_norm,none"),
            "n": results.get("n-samples", {}).get(name, {}).get("effective"),
            "items": item_scores(results["samples"][name]),
        }
        out[name]["stderr"] = mean_stderr(out[name]["items"]["score"])
    return out, lm.tokens_forwarded


def item_scores(samples: list[dict]) -> dict[str, list]:
    """Per-item main metric (acc_norm where lm-eval has it, else acc; see `main_accuracy`) in
    doc-id order, kept so the table can compare two rows on the same items."""
    ordered = sorted(samples, key=lambda sample: sample["doc_id"])
    return {"doc_id": [int(s["doc_id"]) for s in ordered],
            "score": [float(main_accuracy({"acc": s.get("acc"), "acc_norm": s.get("acc_norm")})) for s in ordered]}


def main_accuracy(task_metrics: dict) -> float:
    """The number reported per task in the comparison tables: acc_norm where lm-eval has it
    (PIQA, HellaSwag, ARC-e, ARC-c, OBQA), else acc (BoolQ, WinoGrande). This is what the
    LLM-Pruner tables report (horseee/LLM-Pruner issue #25: its PIQA/HellaSwag/ARC/OBQA
    numbers match acc_norm, not acc), and FLAP and 2407.19126 copy those tables."""
    value = task_metrics.get("acc_norm")
    return task_metrics["acc"] if value is None else value


class Timer:
    def __init__(self):
        self.start = time.time()

    def elapsed(self) -> float:
        return round(time.time() - self.start, 3)
