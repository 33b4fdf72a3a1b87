"""DISP-LLM's pruned architecture (Gao et al., NeurIPS 2024): every decoder layer keeps its own
residual channels in and out instead of one residual width shared by all blocks.

A layer's selection is the paper's S1..S5: the residual channels its attention reads (S1) and
writes (S2), the channels its MLP reads (S3), its MLP neurons (S4) and the channels the MLP
writes (S5). Attention heads are not pruned (neither in the paper nor in its code). The
reference's pruned model (modeling_llama_pruned.py) normalises the whole residual stream, reads
the selected channels of it, and adds each sublayer's output back at its channels with
``index_add``; ours computes the same in the family's own variable-width class
(model/varwidth.py), so the result equals the dense model with every unselected weight zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from structprune.model.geometry import channel_index_entries, decoder_layers


@dataclass(frozen=True)
class ChannelSelection:
    """One decoder layer's kept indices (sorted): S1 attn_in, S2 attn_out, S3 mlp_in, S4 neurons, S5 mlp_out."""

    attn_in: tuple[int, ...]
    attn_out: tuple[int, ...]
    mlp_in: tuple[int, ...]
    neurons: tuple[int, ...]
    mlp_out: tuple[int, ...]

    @classmethod
    def full(cls, hidden: int, intermediate: int) -> ChannelSelection:
        """The dense layer: every channel and neuron kept."""
        every = tuple(range(hidden))
        return cls(every, every, every, tuple(range(intermediate)), every)

    def residual_lists(self) -> list[list[int]]:
        """[attention reads, attention writes, MLP reads, MLP writes]: the config's residual_channels entry."""
        return [list(self.attn_in), list(self.attn_out), list(self.mlp_in), list(self.mlp_out)]


def selection_problems(selections: list[ChannelSelection], hidden: int, intermediate: int) -> list[str]:
    """Why these selections cannot be a checkpoint (empty, unsorted, repeated or out-of-range indices)."""
    problems = []
    for layer, selection in enumerate(selections):
        for name, width in (("attn_in", hidden), ("attn_out", hidden), ("mlp_in", hidden),
                            ("neurons", intermediate), ("mlp_out", hidden)):
            kept = getattr(selection, name)
            if not kept:
                problems.append(f"layer {layer}: {name} keeps nothing (the reference keeps at least one)")
            elif list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= width:
                problems.append(f"layer {layer}: {name} must be sorted distinct indices in [0, {width})")
    return problems


def select_channels(model: nn.Module, selections: list[ChannelSelection]) -> nn.Module:
    """The model with each decoder layer reduced to its selection (weights sliced, never refit:
    DISP-LLM keeps the weights frozen), in the family's variable-width class."""
    from structprune.pruning.slicing import slice_linear, to_variable_width

    config = model.config
    layers = decoder_layers(model)
    if len(selections) != len(layers):
        raise ValueError(f"{len(selections)} selections for {len(layers)} decoder layers")
    if problems := selection_problems(selections, config.hidden_size, config.intermediate_size):
        raise ValueError("; ".join(problems))
    if getattr(config, "residual_channels", None):
        raise ValueError("the model already selects residual channels: select from its dense source instead")
    widths = []
    for layer, s in zip(layers, selections, strict=True):
        attn, mlp = layer.self_attn, layer.mlp
        attn_in, attn_out, mlp_in, neurons, mlp_out = (
            torch.tensor(kept, dtype=torch.long, device=attn.q_proj.weight.device)
            for kept in (s.attn_in, s.attn_out, s.mlp_in, s.neurons, s.mlp_out))
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(attn, name, slice_linear(getattr(attn, name), cols=attn_in))
        attn.o_proj = slice_linear(attn.o_proj, rows=attn_out)
        for name in ("gate_proj", "up_proj"):
            setattr(mlp, name, slice_linear(getattr(mlp, name), rows=neurons, cols=mlp_in))
        mlp.down_proj = slice_linear(mlp.down_proj, rows=mlp_out, cols=neurons)
        head_dim = attn.head_dim
        widths.append((attn.q_proj.out_features // head_dim, attn.k_proj.out_features // head_dim, len(s.neurons)))
    full = ChannelSelection.full(config.hidden_size, config.intermediate_size).residual_lists()
    # a layer that reads and writes the whole stream lists no indices (resize_layers: None)
    return to_variable_width(model, widths, [None if lists == full else lists for lists in (s.residual_lists() for s in selections)])


def stored_block_entries(model: nn.Module) -> int:
    """What the checkpoint holds for its decoder blocks: every weight and bias of the attention and
    MLP projections plus the residual channel indices in its config (the issue's accounting)."""
    projections = sum(p.numel() for layer in decoder_layers(model)
                      for module in (layer.self_attn, layer.mlp) for name, p in module.named_parameters()
                      if name.split(".")[0].endswith("_proj"))
    return projections + channel_index_entries(model.config)
