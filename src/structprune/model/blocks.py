"""How a decoder block's two sublayers read and rejoin the residual stream, for the code that
runs a block in pieces (the refits, the dense stream cache).

Three shapes occur in the supported families:

- pre-norm (Llama, Mistral, Qwen2/3, Gemma): the MLP reads ``post_attention_layernorm(mid)``
  and each sublayer's projection output is added to the stream as it is:
  ``mid = x + o_proj(z)``, ``out = mid + down_proj(h)``;
- scaled (Granite): pre-norm, each update multiplied by ``residual_multiplier``:
  ``mid = x + o_proj(z) * m``, ``out = mid + down_proj(h) * m``;
- sandwich (Gemma 2, Gemma 3): the MLP reads ``pre_feedforward_layernorm(mid)`` and each
  projection output is normalised before the add:
  ``mid = x + post_attention_layernorm(o_proj(z))``,
  ``out = mid + post_feedforward_layernorm(down_proj(h))``.

A least-squares fit of o_proj or down_proj to the dense projection output is linear in the
weights in every shape; so is a fit to the dense residual stream in the first two (the gap
between the streams divided by the multiplier, `residual_gap`), but not in the sandwich shape
(the post-norm divides by the output's own RMS), which is why those families refuse that
target (families/gemma.py).
"""

from __future__ import annotations

import torch
from torch import nn


def is_sandwich(layer: nn.Module) -> bool:
    """Whether the block normalises its sublayers' outputs before the residual add."""
    return hasattr(layer, "post_feedforward_layernorm")


def mlp_norm_path(layer: nn.Module) -> str:
    """The name of the norm whose output the MLP reads (its input is the stream after attention)."""
    return "pre_feedforward_layernorm" if is_sandwich(layer) else "post_attention_layernorm"


def mlp_norm(layer: nn.Module) -> nn.Module:
    return getattr(layer, mlp_norm_path(layer))


def _update(layer: nn.Module, out: torch.Tensor, post_norm: str) -> torch.Tensor:
    if is_sandwich(layer):
        return getattr(layer, post_norm)(out)
    multiplier = getattr(layer, "residual_multiplier", None)
    return out if multiplier is None else out * multiplier  # the operation Granite's layer does


def attention_update(layer: nn.Module, o_proj_out: torch.Tensor) -> torch.Tensor:
    """What the attention adds to the residual stream, from o_proj's output."""
    return _update(layer, o_proj_out, "post_attention_layernorm")


def mlp_update(layer: nn.Module, down_proj_out: torch.Tensor) -> torch.Tensor:
    """What the MLP adds to the residual stream, from down_proj's output."""
    return _update(layer, down_proj_out, "post_feedforward_layernorm")


def block_target(layer: nn.Module, dense_out: torch.Tensor, dense_residual: torch.Tensor,
                 pruned_residual: torch.Tensor) -> torch.Tensor:
    """The projection output whose update brings the pruned residual stream to the dense one's
    value after the sublayer: dense_out + (dense_residual - pruned_residual) / m (m: Granite's
    residual multiplier; 1 elsewhere, where the sum keeps the order it always had). Pre-norm
    shapes only: a sandwich block has no such linear target."""
    if is_sandwich(layer):
        raise ValueError("a sandwich-norm block has no linear residual-stream target (use target: module)")
    multiplier = getattr(layer, "residual_multiplier", None)
    if multiplier is None:
        return dense_out + dense_residual - pruned_residual
    return dense_out + (dense_residual - pruned_residual) / multiplier


def residual_norm_path(layer: nn.Module, module: str) -> str:
    """The norm whose input is the residual stream that `module`'s (o_proj's or down_proj's)
    update is added to: the stream a "block" refit target compares."""
    return {"self_attn.o_proj": "input_layernorm", "mlp.down_proj": mlp_norm_path(layer)}[module]
