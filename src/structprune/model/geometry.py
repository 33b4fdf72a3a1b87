"""The widths of a loaded model's decoder layers (they may differ per layer), and its
parameter counts: what allocation, scores and reports read."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.model.layers


@dataclass(frozen=True)
class LayerGeometry:
    """Widths of one decoder layer, read from its modules (widths may differ per layer)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int

    @property
    def heads_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def attention_params(self) -> int:
        q_and_o = 2 * self.hidden_size * self.num_heads * self.head_dim
        k_and_v = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def mlp_params(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def block_params(self) -> int:
        return self.attention_params + self.mlp_params


def layer_geometry(layer: nn.Module, head_dim: int) -> LayerGeometry:
    attn, mlp = layer.self_attn, layer.mlp
    return LayerGeometry(
        num_heads=attn.q_proj.out_features // head_dim,
        num_kv_heads=attn.k_proj.out_features // head_dim,
        head_dim=head_dim,
        hidden_size=attn.q_proj.in_features,
        intermediate_size=mlp.gate_proj.out_features,
    )


def model_head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def model_geometries(model: nn.Module) -> list[LayerGeometry]:
    head_dim = model_head_dim(model.config)
    return [layer_geometry(layer, head_dim) for layer in decoder_layers(model)]


def channel_index_entries(config) -> int:
    """The residual channel indices a DISP-LLM checkpoint's config lists (layers that read and write
    the whole stream list none): stored numbers, so counted with the parameters."""
    return sum(len(c) for layer in (getattr(config, "residual_channels", None) or []) if layer for c in layer)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total (tied weights counted once) and decoder-block parameter counts, a DISP-LLM
    checkpoint's channel indices included (what the checkpoint holds for its blocks)."""
    indices = channel_index_entries(model.config)
    total = sum(p.numel() for p in model.parameters())  # parameters() deduplicates tied weights
    blocks = sum(p.numel() for p in decoder_layers(model).parameters())
    return {"total": total + indices, "decoder_blocks": blocks + indices}


def pruned_size(before: dict[str, int], after: dict[str, int]) -> dict:
    """The dense counts and the fractions pruning removed, as the prune and select manifests
    record them (`count_parameters` before and after)."""
    return {"dense_parameters": before, "achieved_block_sparsity": 1 - after["decoder_blocks"] / before["decoder_blocks"],
            "achieved_total_sparsity": 1 - after["total"] / before["total"]}
