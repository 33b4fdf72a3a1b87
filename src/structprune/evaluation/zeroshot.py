"""Zero-shot accuracy: lm-eval's tasks, prompts and metrics on local task files, with the
per-item scores the table's paired intervals need."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from structprune.evaluation.items import item_samples
from structprune.evaluation.uncertainty import mean_stderr


def zero_shot(
    model: nn.Module, tokenizer, task_files: dict[str, Path], limit: int | None, batch_size: int = 8,
    items: str = "first", items_seed: int = 0,
) -> tuple[dict[str, dict], int]:
    """lm-eval accuracy of the builtin tasks on local files: ({task: {acc, acc_norm, n}}, tokens
    forwarded). Log-likelihoods come from `PrefixSharingLM` (each item's context computed once;
    the same answers as lm-eval's HFLM); tasks, prompts and metrics are lm-eval's. With a
    `limit`, `items` says which: the first ones or a seeded random sample (`items.item_samples`);
    the per-item scores keep the items' doc ids either way."""
    from lm_eval import evaluator

    from structprune.data.tasks import local_task_config, task_manager
    from structprune.evaluation.prefixlm import PrefixSharingLM

    if not task_files:
        return {}, 0
    manager = task_manager(list(task_files))
    configs = [local_task_config(name, path, manager) for name, path in task_files.items()]
    samples = item_samples(task_files, limit, items, items_seed)
    lm = PrefixSharingLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    results = evaluator.simple_evaluate(
        model=lm, tasks=configs, task_manager=manager, num_fewshot=0,
        limit=limit if samples is None else None, samples=samples,  # lm-eval takes one or the other
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
