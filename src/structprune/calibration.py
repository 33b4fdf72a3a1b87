"""Calibration statistics, gathered layer by layer with forward hooks.

For every decoder layer and every *site* we accumulate, in float64, the count,
the first moment (mean) and the second moment E[x x^T] of the activations at
that site (the covariance is E[x x^T] - mean mean^T). Sites:

- ``block_in``: the residual stream entering the layer (diagonal only);
- ``attn_in``: the input of q/k/v (after ``input_layernorm``);
- ``o_proj_in``: the concatenated head outputs entering ``o_proj`` (full matrix,
  so per-head blocks and cross-head terms are both available);
- ``mlp_in``: the input of gate/up (after ``post_attention_layernorm``);
- ``down_proj_in``: h = silu(gate x) * (up x), the MLP units' outputs. Only the
  diagonal E[h_i^2] is kept by default (the full matrix is intermediate^2).

These are what the distribution-aware scores (E[h_i^2], Sigma_z of each head,
Sigma of the MLP input) and the peer baselines (Wanda-sp's ||x_j||, FLAP's
variance) need. Statistics are taken on the dense model; methods whose
statistics must flow through already-pruned layers compute their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from structprune.device import execution_device, layer_on_device
from structprune.layerwise import capture_layer_inputs, propagate
from structprune.models import decoder_layers

FULL_SITES = ("attn_in", "o_proj_in", "mlp_in")
DIAGONAL_SITES = ("block_in", "down_proj_in")
SITES = FULL_SITES + DIAGONAL_SITES


@dataclass
class MomentAccumulator:
    """Running sums for mean and second moment of row vectors, in float64 (sparsegpt's add_batch)."""

    full: bool
    count: int = 0
    total: torch.Tensor | None = None
    outer: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        if self.total is None:
            self.total = torch.zeros(x.shape[-1], dtype=torch.float64, device=x.device)
            self.outer = torch.zeros(
                (x.shape[-1], x.shape[-1]) if self.full else (x.shape[-1],), dtype=torch.float64, device=x.device
            )
        self.count += x.shape[0]
        self.total += x.sum(0)
        self.outer += x.T @ x if self.full else (x * x).sum(0)

    def moments(self) -> dict[str, torch.Tensor]:
        if not self.count:
            raise ValueError("no activations were accumulated")
        key = "second_moment" if self.full else "second_moment_diag"
        return {"mean": self.total / self.count, key: self.outer / self.count}


@dataclass
class LayerStatistics:
    """Accumulators for one decoder layer, fed by hooks on its submodules."""

    sites: dict[str, MomentAccumulator] = field(
        default_factory=lambda: {
            **{s: MomentAccumulator(full=True) for s in FULL_SITES},
            **{s: MomentAccumulator(full=False) for s in DIAGONAL_SITES},
        }
    )

    def moments(self) -> dict[str, torch.Tensor]:
        """``{site}.{mean|second_moment|second_moment_diag}``: what a scorer reads."""
        return {
            f"{site}.{name}": tensor
            for site, accumulator in self.sites.items()
            for name, tensor in accumulator.moments().items()
        }

    def attach(self, layer: nn.Module) -> list:
        def on_input(site):
            return lambda _m, args: self.sites[site].add(args[0])

        def on_output(site):
            return lambda _m, _args, out: self.sites[site].add(out)

        attn, mlp = layer.self_attn, layer.mlp
        return [
            layer.input_layernorm.register_forward_pre_hook(on_input("block_in")),
            layer.input_layernorm.register_forward_hook(on_output("attn_in")),
            attn.o_proj.register_forward_pre_hook(on_input("o_proj_in")),
            layer.post_attention_layernorm.register_forward_hook(on_output("mlp_in")),
            mlp.down_proj.register_forward_pre_hook(on_input("down_proj_in")),
        ]


def collect_statistics(
    model: nn.Module, input_ids: torch.Tensor, batch_size: int = 8, progress: bool = True
) -> tuple[dict[str, torch.Tensor], int]:
    """Per-layer moments over the calibration samples; returns (tensors, tokens seen).

    Keys are ``layers.{i}.{site}.{mean|second_moment|second_moment_diag}``.
    """
    batches = capture_layer_inputs(model, input_ids, batch_size)
    device = execution_device(model)
    stats: dict[str, torch.Tensor] = {}
    layers = decoder_layers(model)
    for index, layer in enumerate(tqdm(layers, desc="calibrate", disable=not progress)):
        layer_stats = LayerStatistics()
        with layer_on_device(layer, device):
            handles = layer_stats.attach(layer)
            try:
                propagate(layer, batches)
            finally:
                for handle in handles:
                    handle.remove()
        stats.update(_flush(index, layer_stats))
    return stats, layer_stats.sites["block_in"].count


def _flush(index: int, layer_stats: LayerStatistics) -> dict[str, torch.Tensor]:
    return {f"layers.{index}.{key}": tensor.cpu() for key, tensor in layer_stats.moments().items()}


def layer_statistics(stats: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """The entries of one layer, keyed ``{site}.{name}``."""
    prefix = f"layers.{index}."
    return {k[len(prefix):]: v for k, v in stats.items() if k.startswith(prefix)}
