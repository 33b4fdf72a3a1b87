"""A pruning method as five independent choices, and the rules for combining them.

score x unit x allocation x flow x reconstruction (docs/method.md §3):

- score: a registered scorer (`scores/`), with its options;
- unit (`heads`): query heads within kv groups, or whole kv groups (`units.py`);
- allocation: uniform per pruned layer, FLAP's global threshold, SlimGPT's increasing ratios,
  or ratios searched on calibration text (ours, `layersearch.py`), over a block range,
  with a budget rule (uniform: how a layer's target splits between heads and neurons;
  global: kv groups and neurons, or neurons alone) (`allocation.py`);
- flow: ``dense`` (scores from the dense model's statistics, computed once) or
  ``sequential`` (each layer scored on the pruned model's activations);
- reconstruction: none, bias compensation, our post-slice refit, the paper's pre-pruning
  refit (`reconstruction.py`).

This module is stdlib-only: the workflow's config validation imports it, so a combination
that cannot work is rejected before any job starts, with the reason.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace

from structprune.spec.catalog import CHOICES, CRITERION_UNIT, GREEDY_DEPTH_SCORES, SCORE_STATISTICS


@dataclass(frozen=True)
class StatisticsNeeds:
    """What a score reads from the moment statistics beyond every site's mean and diagonal:
    the sites whose full second moment E[x x^T] it needs, and whether it reads the heads'
    Jensen-Shannon attention divergences. Everything else is not collected: the full
    matrices are hidden^2 per site and layer (134 MB in float64 at LLaMA-7B width) and the
    attention maps cost about a layer's forward pass again."""

    full_sites: frozenset = frozenset()
    attention_js: bool = False

    def union(self, other: "StatisticsNeeds") -> "StatisticsNeeds":
        return StatisticsNeeds(self.full_sites | other.full_sites, self.attention_js or other.attention_js)


def statistics_needs(score: str, options: dict | None = None) -> StatisticsNeeds:
    """The statistics `score` with `options` reads (see each score's module): distribution
    needs o_proj_in's full moment (head output power), mlp_in's for the product and closed-form
    MLP scores, and the attention divergences for redundancy 'js' (its defaults: product, js);
    FLAP and Wanda-sp read diagonals and means only."""
    options = options or {}
    if score != "distribution":
        return StatisticsNeeds()
    sites = {"o_proj_in"} | ({"mlp_in"} if options.get("mlp", "product") in ("product", "closed_form") else set())
    return StatisticsNeeds(frozenset(sites), options.get("redundancy", "js") == "js")




def round_to_problem(round_to: int, width: int, whose: str) -> str | None:
    """Why rounding kept MLP neurons to multiples of `round_to` cannot keep a layer of `width`
    neurons (`whose`: "the pruned layers'") near its budget: past half the width a layer keeps
    all of them or loses half. Config validation and the allocation share it."""
    if width and round_to > width // 2:
        return (f"{round_to} is more than half {whose} {width} MLP neurons: every layer would keep all of them or lose "
                "half; use a small multiple such as 8")
    return None


def depth_share_problem(share) -> str | None:
    """Why a share of the removal taken as whole blocks is not one: a number in [0, 1)."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        return f"depth_share: {share!r} must be a number >= 0 and < 1 (0: width only)"
    return None


def damp_problem(damp) -> str | None:
    """Why a ridge strength is not one: a finite number >= 0 (NaN or infinity would write a NaN model)."""
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not math.isfinite(damp) or damp < 0:
        return f"damp: {damp!r} must be a finite number >= 0"
    return None


@dataclass(frozen=True)
class Recipe:
    score: str
    options: dict = field(default_factory=dict)
    heads: str = "within_kv_groups"
    allocation: str = "uniform"
    budget: str = "matched"
    layers: object = "all"  # "protocol" ([4, L-2)), "all", or [start, end)
    sparsity_of: str = "blocks"
    flow: str = "dense"
    reconstruct: str = "none"
    damp: float = 0.01
    target: str = "block"
    round_to: int = 1  # kept MLP neurons of a pruned layer: a multiple of this (ours; 1: exact budgets)
    unit: str = "width"  # "blocks" / "sublayers": by a depth criterion (pruning/depth.py); "channels": DISP-LLM (dispsearch.py)
    depth_share: float = 0.0  # width: this share of the removal as whole blocks first (ours, pruning/mixed.py)

    @property
    def reads_score_file(self) -> bool:
        """Scores computed once on the dense model: the dense flow's selection, or the global
        allocation's per-layer counts."""
        return self.unit == "width" and (self.flow == "dense" or self.allocation == "global")

    @property
    def reads_depth_order(self) -> bool:
        """A greedy depth criterion (SLEB, BlockPruner): its full removal order, searched once
        (the depth_order rule), serves every sparsity."""
        return self.score in GREEDY_DEPTH_SCORES

    @property
    def refits(self) -> bool:
        """Least squares against the dense stream (ours after the cut, or the paper's before)."""
        return self.reconstruct in ("refit", "paper")

    @property
    def needs_samples(self) -> bool:
        """Calibration samples flow through the layers (sequential flow, a refit, or the
        searched allocation's probes)."""
        return (self.unit != "width" or self.flow == "sequential" or self.refits or self.allocation == "searched"
                or bool(self.depth_share))

    @property
    def needs_dense_moments(self) -> bool:
        """Bias compensation from the dense model's statistics (dense flow)."""
        return self.reconstruct == "bias" and not self.needs_samples

    def to_json(self) -> dict:
        """The recipe as JSON; a width-only recipe does not name depth_share (its manifests and
        commands stay those of the recipes made before it existed)."""
        out = asdict(self)
        out["layers"] = list(self.layers) if isinstance(self.layers, (list, tuple)) else self.layers
        if not self.depth_share:
            out.pop("depth_share")
        return out

    def settings(self) -> dict:
        """The fields that change what this recipe computes: the damping only when it refits,
        the refit target only with reconstruct refit, so that a changed recover.damp reruns
        the refitting jobs alone."""
        return {k: v for k, v in self.to_json().items()
                if not (k == "damp" and not self.refits) and not (k == "target" and self.reconstruct != "refit")
                and not (k == "unit" and v == "width")}


def layers_problem(layers) -> str | None:
    """Why a pruned-block range is malformed, or None."""
    if layers in ("protocol", "all") or (isinstance(layers, (list, tuple)) and len(layers) == 2
                                         and all(isinstance(v, int) and v >= 0 for v in layers) and layers[0] < layers[1]):
        return None
    return f"layers: {layers!r} must be 'protocol', 'all' or [start, end) with start < end"


def recipe_problems(recipe: Recipe) -> list[str]:
    """Why this combination cannot run (empty when it can)."""
    problems = []
    for key, allowed in CHOICES.items():
        if getattr(recipe, key) not in allowed:
            problems.append(f"{key}: {getattr(recipe, key)!r} is not one of {list(allowed)}")
    if recipe.score not in SCORE_STATISTICS:
        problems.append(f"score: unknown {recipe.score!r}; known: {sorted(SCORE_STATISTICS)}")
    if problem := layers_problem(recipe.layers):
        problems.append(problem)
    if problem := damp_problem(recipe.damp):
        problems.append(problem)
    if isinstance(recipe.round_to, bool) or not isinstance(recipe.round_to, int) or recipe.round_to < 1:
        problems.append(f"round_to: {recipe.round_to!r} must be an integer >= 1 (1: no rounding)")
    if problem := depth_share_problem(recipe.depth_share):
        problems.append(problem)
    if problems:
        return problems
    if recipe.depth_share and (recipe.unit != "width" or recipe.score in CRITERION_UNIT):
        problems.append("depth_share takes whole blocks before a width method's cut: it applies to unit width only")
    if recipe.depth_share and recipe.allocation not in ("uniform", "increasing"):
        problems.append(f"depth_share with allocation {recipe.allocation!r}: the blocks are dropped first and the width "
                        "ratio spread over the layers left; use allocation uniform or increasing")
    statistics = SCORE_STATISTICS[recipe.score]
    if recipe.score in CRITERION_UNIT or recipe.unit != "width":
        unit, implied = CRITERION_UNIT.get(recipe.score, ("width", recipe.flow))
        if recipe.unit != unit:
            takes = ", ".join(k for k, (u, _) in CRITERION_UNIT.items() if u == recipe.unit)
            problems.append(f"score {recipe.score!r} with unit {recipe.unit!r}: "
                            + (f"it removes {unit}: set unit: {unit}" if recipe.score in CRITERION_UNIT else
                               f"unit {recipe.unit} takes a whole-model criterion ({takes})"))
            return problems
        if recipe.flow != implied:
            how = "greedily on the model as it is cut" if implied == "sequential" else "once on the dense model"
            problems.append(f"score {recipe.score!r} ranks {unit} {how}: set flow: {implied}")
        if recipe.reconstruct != "none":
            problems.append(f"unit: {unit} removes whole {unit} and reconstructs nothing: set reconstruct: none")
        return problems
    if recipe.allocation == "global" and recipe.budget == "matched" and recipe.heads != "kv_groups":
        problems.append("allocation 'global' removes whole kv groups (a lone query head would leave uneven groups): set heads: kv_groups, "
                        "or budget: mlp_only (neurons alone)")
    if recipe.allocation == "global" and recipe.budget == "per_module":
        problems.append("budget 'per_module' applies to the uniform allocation only; the global threshold sets every layer's "
                        "budget over kv groups and neurons (budget: matched) or neurons alone (budget: mlp_only)")
    if recipe.reconstruct == "obs" and recipe.flow != "sequential":
        problems.append("reconstruct 'obs' (SlimGPT) compensates from the Hessians of the pruned stream, layer by layer: "
                        "set flow: sequential")
    if recipe.score == "obs" and recipe.reconstruct != "obs":
        problems.append("score 'obs' (SlimGPT's OBS error) reads the input Hessians reconstruct 'obs' collects on the pruned "
                        "stream: set reconstruct: obs (and flow: sequential)")
    if recipe.score == "obs" and recipe.allocation == "searched":
        problems.append("allocation 'searched' probes each layer with the recipe's score on the dense stream; score 'obs' "
                        "ranks units inside its own OBS loop: use allocation uniform or increasing")
    if recipe.score == "obs" and recipe.allocation == "global":
        problems.append("score 'obs' ranks units inside each layer as it prunes it; a global threshold needs every layer's "
                        "scores first: use allocation uniform or increasing")
    if statistics == "gradients" and (recipe.flow == "sequential" or recipe.reconstruct == "paper"):
        problems.append(
            f"score {recipe.score!r} reads backprop saliencies of the dense model, taken once: it cannot be "
            "recomputed on a pruned stream (flow: sequential or reconstruct: paper); use flow: dense and "
            "reconstruct none, bias or refit"
        )
    return problems


def candidate_recipes(base: Recipe, grid: dict[str, list]) -> list[tuple[dict, Recipe]]:
    """Every combination of the grid's values applied to `base`, in grid order (`select`'s
    candidates; also read by config validation). Keys are Recipe fields, or
    ``options.<name>`` for a score option."""
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, values))
        fields = {k: v for k, v in overrides.items() if not k.startswith("options.")}
        options = {**base.options, **{k.removeprefix("options."): v for k, v in overrides.items() if k.startswith("options.")}}
        unknown = set(fields) - set(Recipe.__dataclass_fields__)
        if unknown:
            raise ValueError(f"grid keys {sorted(unknown)} are not recipe choices; use Recipe fields or options.<name>")
        out.append((overrides, replace(base, options=options, **fields)))
    return out
