"""How a decoder block's two sublayers read and rejoin the residual stream, for the code that
runs a block in pieces (the refits, the dense stream cache).

Two shapes occur in the supported families:

- pre-norm (Llama, Mistral, Qwen2/3, Gemma): the MLP reads ``post_attention_layernorm(mid)``
  and each sublayer's projection output is added to the stream as it is:
  ``mid = x + o_proj(z)``, ``out = mid + down_proj(h)``;
- sandwich (Gemma 2, Gemma 3): the MLP reads ``pre_feedforward_layernorm(mid)`` and each
  projection output is normalised before the add:
  ``mid = x + post_attention_layernorm(o_proj(z))``,
  ``out = mid + post_feedforward_layernorm(down_proj(h))``.

A least-squares fit of o_proj or down_proj to the dense projection output is linear in the
weights in both shapes; a fit to the dense residual stream is not in the sandwich shape (the
post-norm divides by the output's own RMS), which is why the families refuse that target
(families/gemma.py).
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


def attention_update(layer: nn.Module, o_proj_out: torch.Tensor) -> torch.Tensor:
    """What the attention adds to the residual stream, from o_proj's output."""
    return layer.post_attention_layernorm(o_proj_out) if is_sandwich(layer) else o_proj_out


def mlp_update(layer: nn.Module, down_proj_out: torch.Tensor) -> torch.Tensor:
    """What the MLP adds to the residual stream, from down_proj's output."""
    return layer.post_feedforward_layernorm(down_proj_out) if is_sandwich(layer) else down_proj_out


def residual_norm_path(layer: nn.Module, module: str) -> str:
    """The norm whose input is the residual stream that `module`'s (o_proj's or down_proj's)
    update is added to: the stream a "block" refit target compares."""
    return {"self_attn.o_proj": "input_layernorm", "mlp.down_proj": mlp_norm_path(layer)}[module]
