"""Depth pruning: whole decoder blocks removed (recipe `unit: blocks`), the model keeps its
family's class with fewer layers; or whole attention / MLP sublayers (`unit: sublayers`), kept
as layers of zero heads or zero neurons in the family's variable-width class.

Three criteria (docs/baselines.md says what each reference does and where we differ):

- ``block_influence`` (ShortGPT, Men et al. 2024, Sec. 3): a block whose output is nearly its
  input does little. BI_i = 1 - mean over tokens of cos(x_i, x_{i+1}), x_i the residual stream
  entering block i; computed once on the dense model (`flow: dense`), the blocks of lowest BI
  go.
- ``sleb`` (SLEB, Song et al. 2024, Algorithm 1): greedy. At each step every remaining
  candidate block is tried out: the calibration perplexity of the model without it (and
  without the blocks already removed); the block whose absence hurts least goes; repeat.
- ``blockpruner`` (BlockPruner, Zhong et al. 2024, Sec. 3): SLEB's greedy loop over attention
  and MLP sublayers, each removed with its whole residual update.

Candidates are the recipe's layer range (the pruned-range protocol by default; the papers
take every block: our adaptation, so that depth rows keep the same dense blocks as the width
rows). The number of blocks: as many as bring the removed block parameters nearest the
target (`blocks_to_remove`), so depth rows sit at the same size as width rows up to one block.
"""

from __future__ import annotations

import logging
import types
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from structprune.calibration.streams import LayerBatch, apply_layer, capture_layer_inputs, head_logits
from structprune.model.geometry import decoder_layers, model_geometries
from structprune.pruning.slicing import prune_model
from structprune.pruning.units import LayerPlan, PrunePlan
from structprune.spec.catalog import DEPTH_SCORES, GREEDY_DEPTH_SCORES

log = logging.getLogger(__name__)

DEPTH_CRITERIA = tuple(DEPTH_SCORES)
GREEDY_CRITERIA = GREEDY_DEPTH_SCORES  # searched orders, cached by the depth_order rule


def block_parameters(layer: nn.Module) -> int:
    """Every parameter a decoder block holds (norms included), as count_parameters counts them."""
    return sum(p.numel() for p in layer.parameters())


def enough_blocks(sizes: list[int], order: list[int], target: float) -> list[int]:
    """The first blocks of `order` whose removal brings the removed parameters nearest `target`
    (stops before a block that would overshoot more than stopping undershoots)."""
    chosen, removed = [], 0
    for index in order:
        if abs(removed + sizes[index] - target) >= abs(removed - target):
            break
        chosen.append(index)
        removed += sizes[index]
    return chosen


# ------------------------------------------------------------------------ criteria

@torch.no_grad()
def block_influence(model: nn.Module, batches: list[LayerBatch]) -> torch.Tensor:
    """ShortGPT's BI per block, on the dense model: 1 - the mean cosine similarity between a
    token's residual stream entering and leaving the block, over every token of `batches`
    (accumulated in float64). Advances `batches` through every layer."""
    layers = decoder_layers(model)
    scores = torch.zeros(len(layers), dtype=torch.float64)
    for index, layer in enumerate(tqdm(layers, desc="block influence", leave=False)):
        total, count = 0.0, 0
        for batch in batches:
            out = apply_layer(layer, batch)
            cos = nn.functional.cosine_similarity(batch.hidden.double(), out.double(), dim=-1)
            total += float(cos.sum())
            count += cos.numel()
            batch.hidden = out
        scores[index] = 1.0 - total / count
    return scores


@torch.no_grad()
def loss_from(model: nn.Module, start: int, hidden: list[torch.Tensor], batches: list[LayerBatch],
               labels: list[torch.Tensor], skipped: set[int]) -> float:
    """Mean next-token loss of the model run from layer `start` (the hidden states entering it)
    to the head, skipping the layers in `skipped`."""
    layers = decoder_layers(model)
    nll, tokens = 0.0, 0
    for states, batch, ids in zip(hidden, batches, labels, strict=True):
        h = states
        for index in range(start, len(layers)):
            if index not in skipped:
                h = apply_layer(layers[index], LayerBatch(h, batch.layer_kwargs))
        logits = head_logits(model, h)[:, :-1].float()
        nll += float(nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                 reduction="sum"))
        tokens += ids[:, 1:].numel()
    return nll / tokens


def _greedy(candidates: list, sizes, target: float | None, loss_without, advance, name: str) -> tuple[list, list[float]]:
    """SLEB's loop (BlockPruner's too): try every remaining candidate (`loss_without(unit,
    removed)`), remove the cheapest for good (ties: the earlier candidate), until the removed
    parameters are nearest `target` (None: every candidate, the full order); `advance(unit,
    removed)` updates what the trials reuse. No step depends on the target, so the removal to
    any target is the full order's prefix that `enough_blocks` takes."""
    removed, losses, size = [], [], 0
    remaining = list(candidates)
    while remaining:
        trials = {unit: loss_without(unit, removed)
                  for unit in tqdm(remaining, desc=f"{name} step {len(removed) + 1}/{len(candidates)}", leave=False)}
        best = min(remaining, key=lambda unit: (trials[unit], remaining.index(unit)))
        if target is not None and abs(size + sizes[best] - target) >= abs(size - target):
            break
        removed.append(best)
        losses.append(trials[best])
        size += sizes[best]
        remaining.remove(best)
        log.info("%s: removed %s (calibration loss %.4f)", name, best, trials[best])
        advance(best, removed)
    return removed, losses


@torch.no_grad()
def sleb_order(model: nn.Module, batches: list[LayerBatch], labels: list[torch.Tensor], candidates: list[int],
               sizes: list[int], target: float | None) -> tuple[list[int], list[float]]:
    """SLEB's greedy removal of blocks until the removed parameters are nearest `target`: the
    blocks in the order removed, and the calibration loss after each removal. The hidden states
    entering every layer of the current model are kept, so trying a block reruns only the
    layers after it."""
    layers = decoder_layers(model)
    state = {"entering": entering_states(layers, batches, set())}

    def loss_without(index, removed):
        return loss_from(model, index, state["entering"][index], batches, labels, set(removed) | {index})

    def advance(index, removed):
        state["entering"] = entering_states(layers, batches, set(removed), state["entering"], index)

    return _greedy(candidates, sizes, target, loss_without, advance, "SLEB")


def entering_states(layers, batches: list[LayerBatch], skipped: set[int], previous=None, changed: int = 0):
    """Per layer, the hidden states entering it (one tensor per batch) in the model without the
    `skipped` layers; with `previous`, only the layers after `changed` are recomputed."""
    entering = list(previous) if previous is not None else [None] * (len(layers) + 1)
    start = changed if previous is not None else 0
    hidden = entering[start] if previous is not None else [b.hidden for b in batches]
    for index in range(start, len(layers)):
        entering[index] = hidden
        if index not in skipped:
            hidden = [apply_layer(layers[index], LayerBatch(h, b.layer_kwargs)) for h, b in zip(hidden, batches, strict=True)]
    entering[len(layers)] = hidden
    return entering


# ------------------------------------------------------------------- sublayers

def _no_attention(self, hidden_states, *args, **kwargs):
    return torch.zeros_like(hidden_states), None


def _no_mlp(self, x):
    return torch.zeros_like(x)


def sublayer(layers, unit: tuple[str, int]) -> nn.Module:
    kind, index = unit
    return layers[index].self_attn if kind == "attn" else layers[index].mlp


@contextmanager
def without_sublayers(layers, units):
    """While active, the sublayers `units` ((kind, layer) pairs, kind "attn" or "mlp") add
    nothing to the residual stream (a post-norm of zero is zero, so this holds in every shape)."""
    patched = []
    try:
        for unit in units:
            module = sublayer(layers, unit)
            module.forward = types.MethodType(_no_attention if unit[0] == "attn" else _no_mlp, module)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


@torch.no_grad()
def blockpruner_order(model: nn.Module, batches: list[LayerBatch], labels: list[torch.Tensor],
                      candidates: list[tuple[str, int]], sizes: dict, target: float | None) -> tuple[list, list[float]]:
    """BlockPruner's greedy removal of sublayers until the removed parameters are nearest
    `target`: SLEB's loop over attention and MLP sublayers (candidates in the reference's order,
    every attention then every MLP; ties go to the earlier)."""
    layers = decoder_layers(model)
    state = {"entering": entering_states(layers, batches, set())}

    def loss_without(unit, removed):
        with without_sublayers(layers, [*removed, unit]):
            return loss_from(model, unit[1], state["entering"][unit[1]], batches, labels, set())

    def advance(unit, removed):
        with without_sublayers(layers, removed):
            state["entering"] = entering_states(layers, batches, set(), state["entering"], unit[1])

    return _greedy(candidates, sizes, target, loss_without, advance, "BlockPruner")


# ----------------------------------------------------------------------- the cut

def remove_blocks(model: nn.Module, removed: list[int]) -> nn.Module:
    """Delete decoder blocks in place: the layer list, each kept layer's index (its KV-cache
    slot), and every per-layer list of the config (layer_types, no_rope_layers, layer_widths),
    so the checkpoint is the family's own class with fewer layers."""
    layers = decoder_layers(model)
    n_layers = len(layers)
    kept = [i for i in range(n_layers) if i not in set(removed)]
    model.model.layers = nn.ModuleList([layers[i] for i in kept])
    for new_index, layer in enumerate(model.model.layers):
        for module in (layer, layer.self_attn):
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    config = model.config
    for key in ("layer_types", "no_rope_layers", "layer_widths"):
        values = getattr(config, key, None)
        if isinstance(values, (list, tuple)) and len(values) == n_layers:
            setattr(config, key, [values[i] for i in kept])
    config.num_hidden_layers = len(kept)
    return model


def calibration_labels(samples: torch.Tensor, batch_size: int, device) -> list[torch.Tensor]:
    return [samples[start:start + batch_size].to(device) for start in range(0, samples.shape[0], batch_size)]


def _sublayer_units(candidates: list[int]) -> list[tuple[str, int]]:
    return [("attn", i) for i in candidates] + [("mlp", i) for i in candidates]  # the reference's order


def _sublayer_sizes(layers, units: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    return {unit: sum(p.numel() for p in sublayer(layers, unit).parameters()) for unit in units}


def greedy_order(model: nn.Module, criterion: str, candidates: list[int], samples: torch.Tensor,
                 batch_size: int) -> dict:
    """The full greedy order of a searched criterion (SLEB: blocks; BlockPruner: sublayers):
    every candidate removed one by one, with the calibration loss after each removal. Computed
    once (the depth_order stage), it serves every sparsity: each prunes its prefix (`order=`)."""
    if criterion not in GREEDY_CRITERIA:
        raise ValueError(f"{criterion!r} has no greedy order; greedy criteria: {list(GREEDY_CRITERIA)}")
    layers = decoder_layers(model)
    batches = capture_layer_inputs(model, samples, batch_size)
    labels = calibration_labels(samples, batch_size, batches[0].hidden.device)
    if criterion == "sleb":
        removed, losses = sleb_order(model, batches, labels, candidates, [block_parameters(x) for x in layers], None)
    else:
        units = _sublayer_units(candidates)
        removed, losses = blockpruner_order(model, batches, labels, units, _sublayer_sizes(layers, units), None)
    return {"criterion": criterion, "candidates": list(candidates), "n_layers": len(layers),
            "order": [list(u) if isinstance(u, tuple) else u for u in removed], "losses": [round(v, 6) for v in losses]}


def _prefix(order: dict, criterion: str, candidates: list[int], n_layers: int, sizes, target: float) -> tuple[list, list]:
    """The units a search to `target` removes, read off a full greedy order (and their losses)."""
    if (order.get("criterion"), order.get("candidates"), order.get("n_layers")) != (criterion, list(candidates), n_layers):
        raise ValueError(f"the depth order is {order.get('criterion')!r} over layers {order.get('candidates')} of a "
                         f"{order.get('n_layers')}-layer model, not this job's {criterion!r} over {list(candidates)} of "
                         f"{n_layers}: pass the order the depth-order stage made for this model, method and layer range")
    units = [tuple(u) if isinstance(u, list) else u for u in order["order"]]
    removed = enough_blocks(sizes, units, target)
    return removed, order["losses"][:len(removed)]


def prune_blocks(model: nn.Module, criterion: str, candidates: list[int], target_params: float,
                 samples: torch.Tensor, batch_size: int, order: dict | None = None) -> tuple[nn.Module, dict]:
    """Remove the blocks `criterion` picks among `candidates` until the removed parameters are
    nearest `target_params`; the model (in place) and a report (blocks, criterion values).
    `order`: SLEB's full greedy order (greedy_order), read instead of searching."""
    if criterion not in DEPTH_CRITERIA:
        raise ValueError(f"unknown depth criterion {criterion!r}; known: {list(DEPTH_CRITERIA)}")
    if criterion == "blockpruner":
        raise ValueError("blockpruner removes sublayers: use prune_sublayers")
    layers = decoder_layers(model)
    sizes = [block_parameters(layer) for layer in layers]
    if criterion == "sleb" and order is not None:
        removed, losses = _prefix(order, criterion, candidates, len(layers), sizes, target_params)
        report = {"criterion": criterion, "calibration_loss_after_each": losses, "order_read": True}
    else:
        batches = capture_layer_inputs(model, samples, batch_size)
        if criterion == "block_influence":
            scores = block_influence(model, batches)
            ranked = sorted(candidates, key=lambda i: (float(scores[i]), i))
            removed = enough_blocks(sizes, ranked, target_params)
            report = {"criterion": criterion, "block_influence": [round(float(s), 6) for s in scores]}
        else:
            labels = calibration_labels(samples, batch_size, batches[0].hidden.device)
            removed, losses = sleb_order(model, batches, labels, candidates, sizes, target_params)
            report = {"criterion": criterion, "calibration_loss_after_each": [round(v, 6) for v in losses]}
    report["removed_blocks"] = removed  # in the order the criterion chose them
    return remove_blocks(model, sorted(removed)), report


def prune_sublayers(model: nn.Module, candidates: list[int], target_params: float, samples: torch.Tensor,
                    batch_size: int, order: dict | None = None) -> tuple[list[tuple[str, int]], dict]:
    """The attention and MLP sublayers of layers `candidates` BlockPruner removes until the
    removed parameters are nearest `target_params` (the model is not changed here: the
    engine slices them to zero heads or neurons) and a report. `order`: its full greedy order."""
    layers = decoder_layers(model)
    units = _sublayer_units(candidates)
    sizes = _sublayer_sizes(layers, units)
    if order is not None:
        removed, losses = _prefix(order, "blockpruner", candidates, len(layers), sizes, target_params)
    else:
        batches = capture_layer_inputs(model, samples, batch_size)
        labels = calibration_labels(samples, batch_size, batches[0].hidden.device)
        removed, losses = blockpruner_order(model, batches, labels, units, sizes, target_params)
        losses = [round(v, 6) for v in losses]
    return removed, {"criterion": "blockpruner", "removed_sublayers": [list(u) for u in removed],
                     "calibration_loss_after_each": losses, **({"order_read": True} if order is not None else {})}


def prune_depth(model: nn.Module, unit: str, criterion: str, candidates: list[int], target_params: float,
                samples: torch.Tensor, batch_size: int, order: dict | None = None) -> tuple[nn.Module, PrunePlan, dict]:
    """A depth recipe carried out: whole blocks deleted (`unit` "blocks"), or whole attention / MLP
    sublayers sliced to zero heads or neurons ("sublayers": the variable-width class skips them);
    the model, the kept layers' plan and the criterion's report. `order`: a greedy criterion's
    full order (greedy_order), whose prefix is the same removal as a search to the target."""
    if unit == "sublayers":
        removed, report = prune_sublayers(model, candidates, target_params, samples, batch_size, order)
        plan = PrunePlan([LayerPlan([] if ("attn", i) in removed else list(range(g.num_heads)),
                                    [] if ("attn", i) in removed else list(range(g.num_kv_heads)),
                                    [] if ("mlp", i) in removed else list(range(g.intermediate_size)))
                          for i, g in enumerate(model_geometries(model))])
        log.info("removed sublayers %s (%s)", removed, criterion)
        return prune_model(model, plan), plan, report
    model, report = prune_blocks(model, criterion, candidates, target_params, samples, batch_size, order)
    plan = PrunePlan([LayerPlan(list(range(g.num_heads)), list(range(g.num_kv_heads)), list(range(g.intermediate_size)))
                      for g in model_geometries(model)])
    log.info("removed blocks %s (%s)", report["removed_blocks"], criterion)
    return model, plan, report
