"""Choosing a method's settings on held-out calibration text, never on evaluation data.

A base `Recipe` and a grid of alternatives (``{"damp": [0.01, 1.0], "heads": [...]}``) give
candidate recipes; combinations the engine cannot run are skipped with their reason. Each
candidate prunes its own copy of the dense model on the calibration samples, and its mean
next-token loss on held-out samples (windows of calibration text that no candidate was fit
on) decides; ties go to the earlier candidate. The losses of every candidate are returned for
the checkpoint's manifest and the report (issue #11: WikiText-2 test, PTB validation and the
task items are read by the evaluate stage alone).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from structprune.io.integrity import read_stage_json
from structprune.pruning.engine import EngineResult, prune_with_recipe
from structprune.pruning.scores import score_model
from structprune.spec.recipe import Recipe, candidate_recipes, recipe_problems

log = logging.getLogger(__name__)


@dataclass
class CandidateResult:
    overrides: dict
    recipe: Recipe
    heldout_loss: float | None  # None: not run (see `skipped`)
    skipped: str | None = None

    def to_json(self, chosen: bool = False) -> dict:
        ppl = None if self.heldout_loss is None else math.exp(min(self.heldout_loss, 700.0))
        return {"overrides": self.overrides, "heldout_loss": self.heldout_loss, "heldout_ppl": ppl,
                "skipped": self.skipped, "chosen": chosen}


@torch.no_grad()
def heldout_loss(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 8) -> float:
    """Mean next-token negative log-likelihood (nats) over held-out samples."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, input_ids.shape[0], batch_size):
        batch = input_ids[start : start + batch_size].to(device)
        logits = model(batch, use_cache=False).logits[:, :-1].float()
        total += float(nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"))
        count += batch[:, 1:].numel()
    return total / count


def select_recipe(
    model: nn.Module, base: Recipe, grid: dict[str, list], sparsity: float, *, heldout: torch.Tensor,
    samples: torch.Tensor | None = None, stats: dict | None = None, batch_size: int = 8, progress: bool = True,
    dense_stream: str | None = None,
) -> tuple[EngineResult, int, list[CandidateResult]]:
    """Prune a copy of `model` with every runnable candidate and keep the one with the lowest
    held-out loss; returns its result, its index in the candidate list, and every candidate.
    Dense scores, where a candidate needs them, are computed from `stats` (the dense model's
    calibration moments; data-free scores need none). A candidate that cannot run at this
    sparsity, or whose loss is not finite, is recorded as skipped with the reason. Candidates
    that refit read the dense stream from `dense_stream` (a cache folder), if given."""
    results: list[CandidateResult] = []
    best: tuple[float, EngineResult, int] | None = None
    score_cache: dict[str, dict] = {}
    for overrides, recipe in candidate_recipes(base, grid):
        problems = recipe_problems(recipe)
        if problems:
            results.append(CandidateResult(overrides, recipe, None, "; ".join(problems)))
            log.info("candidate %s skipped: %s", overrides, problems)
            continue
        scores = None
        if recipe.reads_score_file:
            key = repr((recipe.score, sorted(recipe.options.items())))
            if key not in score_cache:
                score_cache[key] = score_model(model, recipe.score, stats, recipe.options)
            scores = score_cache[key]
        try:
            result = prune_with_recipe(copy.deepcopy(model), recipe, sparsity, scores=scores, stats=stats,
                                       samples=samples, batch_size=batch_size, progress=progress, dense_stream=dense_stream)
        except ValueError as error:  # e.g. a budget rule that cannot reach this sparsity
            results.append(CandidateResult(overrides, recipe, None, str(error)))
            log.warning("candidate %s cannot run: %s", overrides, error)
            continue
        loss = heldout_loss(result.model, heldout, batch_size)
        if not math.isfinite(loss):
            results.append(CandidateResult(overrides, recipe, None, f"held-out loss is {loss}"))
            log.warning("candidate %s: held-out loss %s, skipped", overrides, loss)
            continue
        results.append(CandidateResult(overrides, recipe, loss))
        log.info("candidate %s: held-out loss %.4f", overrides, loss)
        if best is None or loss < best[0]:
            best = (loss, result, len(results) - 1)
    if best is None:
        raise NoRunnableCandidate("no candidate of the grid can run: " + "; ".join(r.skipped for r in results))
    return best[1], best[2], results


class NoRunnableCandidate(ValueError):
    """Every candidate of a grid failed to run at this sparsity (the message lists why)."""


def chosen_grid(checkpoint: str, base, grid: dict, rechoose: list[str] = ()) -> tuple[dict, float]:
    """The grid of the choice a select checkpoint made (`select.at`): one value per key, the
    value chosen there, except the keys in `rechoose`, which keep all their alternatives and
    are chosen again here; and the sparsity it was made at. Its base recipe and grid must be
    this job's, else the choice answers another question."""
    unknown = [key for key in rechoose if key not in grid]
    if unknown:
        raise ValueError(f"--rechoose {unknown}: not keys of the grid {sorted(grid)}")
    path = Path(checkpoint) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"--chosen-in {checkpoint}: no manifest.json; run the select job at that sparsity first")
    manifest = read_stage_json(path)
    params = manifest.get("parameters", {})
    if manifest.get("stage") != "select" or "base_recipe" not in params:
        raise ValueError(f"--chosen-in {checkpoint}: not a select checkpoint (its manifest has no base recipe)")
    as_json = lambda value: json.loads(json.dumps(value))  # noqa: E731  (tuples read back as lists)
    current = as_json(base.to_json())
    defaults = as_json(type(base)(score=base.score).to_json())
    # a recipe field added after that checkpoint was written, at its default, asks the same question
    current = {k: v for k, v in current.items() if k in params["base_recipe"] or v != defaults.get(k)}
    if params["base_recipe"] != current or params["grid"] != as_json(grid):
        raise ValueError(f"--chosen-in {checkpoint}: chosen for another recipe or grid (base {params['base_recipe']}, "
                         f"grid {params['grid']}); this job has base {base.to_json()}, grid {grid}: rerun that select job")
    chosen = [c for c in manifest["candidates"] if c["chosen"]]
    if len(chosen) != 1:
        raise ValueError(f"--chosen-in {checkpoint}: the manifest records {len(chosen)} chosen candidates, not one")
    return {key: (list(grid[key]) if key in rechoose else [value]) for key, value in chosen[0]["overrides"].items()}, params["sparsity"]
