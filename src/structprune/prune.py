"""Slicing a model to the units kept in a plan: real smaller weight shapes, no masks."""

from __future__ import annotations

import torch
from torch import nn

from structprune.models import decoder_layers, model_head_dim
from structprune.plan import PrunePlan


def unit_channels(units: list[int], width: int) -> torch.Tensor:
    """Channel indices of the kept units when each unit spans `width` consecutive channels."""
    idx = torch.tensor(units, dtype=torch.long)
    return (idx[:, None] * width + torch.arange(width)[None, :]).reshape(-1)


def slice_linear(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear keeping the given output rows and/or input columns (and bias entries)."""
    weight = linear.weight.data
    bias = linear.bias.data if linear.bias is not None else None
    if rows is not None:
        weight = weight[rows]
        bias = bias[rows] if bias is not None else None
    if cols is not None:
        weight = weight[:, cols]
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype, device=weight.device)
    out.weight.data.copy_(weight)
    if bias is not None:
        out.bias.data.copy_(bias)
    return out


def prune_layer(layer: nn.Module, keep_heads: list[int], keep_kv_heads: list[int], keep_neurons: list[int], head_dim: int) -> None:
    """Remove a layer's pruned heads (q rows + o columns, k/v rows of removed kv groups) and neurons."""
    attn, mlp = layer.self_attn, layer.mlp
    q_channels = unit_channels(keep_heads, head_dim)
    kv_channels = unit_channels(keep_kv_heads, head_dim)
    attn.q_proj = slice_linear(attn.q_proj, rows=q_channels)
    attn.k_proj = slice_linear(attn.k_proj, rows=kv_channels)
    attn.v_proj = slice_linear(attn.v_proj, rows=kv_channels)
    attn.o_proj = slice_linear(attn.o_proj, cols=q_channels)
    attn.num_key_value_groups = len(keep_heads) // len(keep_kv_heads)
    for name in ("num_heads", "num_attention_heads"):
        if hasattr(attn, name):
            setattr(attn, name, len(keep_heads))
    if hasattr(attn, "num_key_value_heads"):
        attn.num_key_value_heads = len(keep_kv_heads)
    neurons = torch.tensor(keep_neurons, dtype=torch.long)
    mlp.gate_proj = slice_linear(mlp.gate_proj, rows=neurons)
    mlp.up_proj = slice_linear(mlp.up_proj, rows=neurons)
    mlp.down_proj = slice_linear(mlp.down_proj, cols=neurons)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep_neurons)


def check_plan(model: nn.Module, plan: PrunePlan) -> None:
    """Reject a plan that does not fit the model, before any weight is touched."""
    layers = decoder_layers(model)
    if len(plan.layers) != len(layers):
        raise ValueError(f"plan has {len(plan.layers)} layers, model has {len(layers)}")
    head_dim = model_head_dim(model.config)
    for index, (layer, lp) in enumerate(zip(layers, plan.layers)):
        heads = layer.self_attn.q_proj.out_features // head_dim
        kv = layer.self_attn.k_proj.out_features // head_dim
        group = heads // kv
        if not lp.keep_heads or not lp.keep_kv_heads or not lp.keep_neurons:
            raise ValueError(f"layer {index}: a plan must keep at least one head, kv head and neuron")
        per_group = [sum(1 for h in lp.keep_heads if h // group == g) for g in lp.keep_kv_heads]
        if len(set(per_group)) != 1 or sum(per_group) != len(lp.keep_heads):
            raise ValueError(
                f"layer {index}: kept query heads must be spread evenly over kept kv groups "
                f"(got {per_group} heads in kv groups {lp.keep_kv_heads})"
            )


def prune_model(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Slice every layer to the units kept in `plan` (in place) and update the config."""
    check_plan(model, plan)
    head_dim = model_head_dim(model.config)
    for layer, lp in zip(decoder_layers(model), plan.layers):
        prune_layer(layer, lp.keep_heads, lp.keep_kv_heads, lp.keep_neurons, head_dim)
    update_config(model.config, plan, head_dim)
    return model


def update_config(config, plan: PrunePlan, head_dim: int) -> None:
    widths = {(len(lp.keep_heads), len(lp.keep_kv_heads), len(lp.keep_neurons)) for lp in plan.layers}
    config.head_dim = head_dim  # must be explicit once num_attention_heads * head_dim != hidden_size
    if len(widths) == 1:
        heads, kv, neurons = widths.pop()
        if config.hidden_size % heads:
            raise NotImplementedError(
                f"{heads} heads do not divide hidden_size {config.hidden_size}, which the stock "
                "LlamaConfig rejects; such widths need the variable-width Llama config "
                "(issue: peer baselines). Choose a sparsity that keeps a divisor of the head count."
            )
        config.num_attention_heads, config.num_key_value_heads, config.intermediate_size = heads, kv, neurons
        return
    raise NotImplementedError(
        "per-layer widths need the variable-width Llama config (issue: peer baselines); "
        "every plan produced so far is uniform"
    )
