"""Layer-wise recovery ("remedy", arXiv 2407.19126; our reading, see docs/method.md).

Layers are processed in order with two streams of calibration hidden states:
the dense model's (X_l) and the pruned-and-recovered model's (X^_l). At layer l:

1. pass 1: both streams go through the still-dense layer; we gather the pruned
   stream's statistics (for scoring) and, for o_proj, the pairs (input on the pruned
   stream z^, target): with the default target "block" the target is the dense output
   W_o z plus the gap between the dense and pruned residual streams it is added to;
2. the layer is scored on X^_l's statistics, planned and sliced;
3. o_proj's kept columns are refit: W^ = argmin ||W z^_kept - target||^2, ridge-damped
   toward the dense weights (see `ridge_toward`);
4. pass 2: with the pruned attention in place, the MLP's pairs (h^, target) are
   gathered and down_proj's kept columns are refit the same way;
5. both streams advance: the dense stream through the dense layer, the pruned
   stream through the recovered one. Errors therefore do not compound.

Only o_proj and down_proj are refit: they are the matrices whose inputs are
pruned, and their refit is an exact linear least-squares problem. Memory stays
one layer's statistics plus the two streams' hidden states.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from structprune.calibration import LayerStatistics
from structprune.device import execution_device, layer_on_device
from structprune.layerwise import LayerBatch, apply_layer, capture_layer_inputs, propagate
from structprune.models import decoder_layers, layer_geometry, model_head_dim
from structprune.plan import LayerPlan, PrunePlan, plan_layer
from structprune.prune import prune_layer, unit_channels, with_plan_widths
from structprune.scores import LayerWeights, Scorer

log = logging.getLogger(__name__)

REFIT_DEFAULT = ("o_proj", "down_proj")


@dataclass
class LinearRefit:
    """Normal equations of one linear map, accumulated in float64: X^X^^T, Y X^^T and ||Y||^2."""

    xx: torch.Tensor | None = None
    yx: torch.Tensor | None = None
    yy: float = 0.0
    count: int = 0

    def add(self, x_hat: torch.Tensor, y: torch.Tensor) -> None:
        x_hat = x_hat.reshape(-1, x_hat.shape[-1]).to(torch.float64)
        y = y.reshape(-1, y.shape[-1]).to(torch.float64)
        if self.xx is None:
            self.xx = torch.zeros(x_hat.shape[1], x_hat.shape[1], dtype=torch.float64, device=x_hat.device)
            self.yx = torch.zeros(y.shape[1], x_hat.shape[1], dtype=torch.float64, device=x_hat.device)
        self.xx += x_hat.T @ x_hat
        self.yx += y.T @ x_hat
        self.yy += float((y * y).sum())
        self.count += x_hat.shape[0]

    def restricted(self, columns: torch.Tensor) -> "LinearRefit":
        return LinearRefit(self.xx[columns][:, columns], self.yx[:, columns], self.yy, self.count)

    def error(self, weight: torch.Tensor) -> float:
        """Mean squared reconstruction error ||W X^ - Y||^2 / tokens, from the accumulated sums."""
        w = weight.to(torch.float64)
        total = (w @ self.xx * w).sum() - 2 * (w * self.yx).sum() + self.yy
        return float(total) / max(self.count, 1)


def ridge_toward(weight0: torch.Tensor, refit: LinearRefit, damp: float) -> torch.Tensor:
    """argmin_W ||W X^ - Y||^2 + sum_j lambda_j ||W[:, j] - W0[:, j]||^2, closed form.

    lambda_j = damp * (X^X^^T)_jj: damping per input channel, relative to that channel's
    own energy, toward the dense weights. A single scalar from the mean of diag(X X^T)
    would shrink every ordinary channel of a model with massive activations toward zero
    (DESIGN.md, "Numerics"). With damp = 0 this is ordinary least squares.
    """
    w0 = weight0.to(torch.float64)
    diag = refit.xx.diagonal()
    lam = damp * diag + 1e-12 * diag.max().clamp_min(1e-30)  # floor keeps dead channels solvable
    lhs = refit.xx + torch.diag(lam)
    rhs = refit.yx + w0 * lam[None, :]
    solution = torch.linalg.solve(lhs, rhs.T).T
    return solution.to(weight0.dtype)


@dataclass
class LayerReport:
    layer: int
    o_proj_error: tuple[float, float]  # (pruned, refit) mean squared error vs dense output
    down_proj_error: tuple[float, float]
    kept: dict = field(default_factory=dict)


def _module_io(module: nn.Module, store: dict, key: str) -> object:
    """A hook that records a module's input and output under `key`."""
    def hook(_m, args, out):
        store[key] = (args[0].detach(), out.detach())
    return module.register_forward_hook(hook)


# Each refit matrix, and the norm whose input is the residual stream its output is added to.
RESIDUAL_OF = {"self_attn.o_proj": "input_layernorm", "mlp.down_proj": "post_attention_layernorm"}
TARGETS = ("block", "module")


def _paired_pass(
    dense_layer, layer, dense, pruned, module_name: str, target: str, stats: LayerStatistics | None = None
) -> LinearRefit:
    """Run both streams once and pair the pruned stream's input of `module_name` with its target.

    target="module": the dense module's output. target="block": the dense module's output
    plus the gap between the dense and the pruned residual stream it is added to, so that the
    refit module makes the residual stream after it match the dense model's again
    (the layer reproduces the dense model's output Y_l; drift from earlier layers is corrected).
    """
    refit = LinearRefit()
    seen: dict = {}
    handles = [
        _module_io(dense_layer.get_submodule(module_name), seen, "dense"),
        _module_io(layer.get_submodule(module_name), seen, "pruned"),
    ]
    if target == "block":
        residual = RESIDUAL_OF[module_name]
        handles += [
            _module_io(dense_layer.get_submodule(residual), seen, "dense_residual"),
            _module_io(layer.get_submodule(residual), seen, "pruned_residual"),
        ]
    handles += stats.attach(layer) if stats is not None else []
    try:
        for d, p in zip(dense, pruned):
            apply_layer(dense_layer, d)
            apply_layer(layer, p)
            y = seen["dense"][1]
            if target == "block":
                y = y + seen["dense_residual"][0] - seen["pruned_residual"][0]
            refit.add(seen["pruned"][0], y)
    finally:
        for handle in handles:
            handle.remove()
    return refit


def recover_model(
    model: nn.Module,
    input_ids: torch.Tensor,
    scorer: Scorer,
    sparsity: float,
    head_mode: str = "within_kv_groups",
    damp: float = 0.01,
    batch_size: int = 8,
    progress: bool = True,
    refit: tuple[str, ...] = REFIT_DEFAULT,
    target: str = "block",
) -> tuple[nn.Module, PrunePlan, list[LayerReport]]:
    """Prune `model` layer by layer, refitting o_proj and down_proj after each cut.

    Returns the pruned model (the same object unless its widths need the variable-width
    class, see `prune.with_plan_widths`), the plan and per-layer reconstruction errors.

    `refit` selects the matrices that are refit (an ablation knob); the others keep their
    sliced dense weights, but scoring still uses the pruned stream's statistics. `target`
    chooses what a refit matrix must reproduce (see `_paired_pass`).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    unknown = set(refit) - set(REFIT_DEFAULT)
    if unknown:
        raise ValueError(f"refit: unknown matrices {sorted(unknown)}; choose from {REFIT_DEFAULT}")
    head_dim = model_head_dim(model.config)
    dense: list[LayerBatch] = capture_layer_inputs(model, input_ids, batch_size)
    pruned = [LayerBatch(b.hidden.clone(), b.kwargs) for b in dense]
    plans, reports = [], []
    layers = decoder_layers(model)
    device = execution_device(model)
    for index, layer in enumerate(tqdm(layers, desc="recover", disable=not progress)):
        with layer_on_device(layer, device):
            lp, report = _recover_layer(index, layer, dense, pruned, scorer, sparsity, head_mode, damp, refit, target, head_dim)
        plans.append(lp)
        reports.append(report)
    plan = PrunePlan(plans)
    return with_plan_widths(model, plan), plan, reports


def _recover_layer(index, layer, dense, pruned, scorer, sparsity, head_mode, damp, refit, target, head_dim):
    """Prune one decoder layer in place, refit its output matrices, advance both streams."""
    dense_layer = copy.deepcopy(layer)
    stats = LayerStatistics()
    o_refit = _paired_pass(dense_layer, layer, dense, pruned, "self_attn.o_proj", target, stats)
    scores = scorer(LayerWeights.from_layer(index, layer, head_dim), stats.moments())
    lp: LayerPlan = plan_layer(scores.heads, scores.neurons, layer_geometry(layer, head_dim), sparsity, head_mode)
    prune_layer(layer, lp.keep_heads, lp.keep_kv_heads, lp.keep_neurons, head_dim)

    columns = unit_channels(lp.keep_heads, head_dim)
    o_kept = o_refit.restricted(columns)
    o_before = layer.self_attn.o_proj.weight.data.clone()
    if "o_proj" in refit:
        layer.self_attn.o_proj.weight.data = ridge_toward(o_before, o_kept, damp)
    o_errors = (o_kept.error(o_before), o_kept.error(layer.self_attn.o_proj.weight.data))

    d_refit = _paired_pass(dense_layer, layer, dense, pruned, "mlp.down_proj", target)
    d_before = layer.mlp.down_proj.weight.data.clone()
    if "down_proj" in refit:
        layer.mlp.down_proj.weight.data = ridge_toward(d_before, d_refit, damp)
    d_errors = (d_refit.error(d_before), d_refit.error(layer.mlp.down_proj.weight.data))

    propagate(dense_layer, dense)
    propagate(layer, pruned)
    log.info(
        "layer %d: o_proj mse %.3g -> %.3g, down_proj mse %.3g -> %.3g",
        index, *o_errors, *d_errors,
    )
    del dense_layer
    return lp, LayerReport(index, o_errors, d_errors, {"heads": len(lp.keep_heads), "neurons": len(lp.keep_neurons)})



def prune_sequential(
    model: nn.Module,
    input_ids: torch.Tensor,
    scorer: Scorer,
    sparsity: float,
    head_mode: str = "within_kv_groups",
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[nn.Module, PrunePlan]:
    """Score and prune layer by layer on the already pruned model's activations, no refit.

    Wanda-sp's flow (FLAP repo ``lib/prune.py`` ``prune_wanda_sp``): layer l's statistics
    are gathered in one pass of the still-dense layer l over the outputs of the pruned
    layers 0..l-1 (so the MLP's statistics see layer l's dense attention); the layer is
    then pruned, and the pruned layer's outputs feed layer l+1. Uniform ratio per layer.
    """
    head_dim = model_head_dim(model.config)
    batches = capture_layer_inputs(model, input_ids, batch_size)
    plans = []
    device = execution_device(model)
    for index, layer in enumerate(tqdm(decoder_layers(model), desc="sequential prune", disable=not progress)):
        with layer_on_device(layer, device):
            stats = LayerStatistics()
            handles = stats.attach(layer)
            try:
                for batch in batches:
                    apply_layer(layer, batch)
            finally:
                for handle in handles:
                    handle.remove()
            scores = scorer(LayerWeights.from_layer(index, layer, head_dim), stats.moments())
            lp = plan_layer(scores.heads, scores.neurons, layer_geometry(layer, head_dim), sparsity, head_mode)
            prune_layer(layer, lp.keep_heads, lp.keep_kv_heads, lp.keep_neurons, head_dim)
            propagate(layer, batches)
        plans.append(lp)
    plan = PrunePlan(plans)
    return with_plan_widths(model, plan), plan
