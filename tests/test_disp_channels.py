"""DISP-LLM's pruned architecture (issue #32): each decoder layer reads and writes its own residual
channels. Known answer in every family: the checkpoint computes what the dense model computes
with every unselected weight zeroed, before and after saving, with our loader and with plain
transformers; keeping everything changes nothing; the stored entries are counted with the indices."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from structprune.io.checkpoint import save_checkpoint
from structprune.model.geometry import decoder_layers
from structprune.model.loading import load_checkpoint
from structprune.pruning.channels import ChannelSelection, select_channels, selection_problems, stored_block_entries
from test_family_adapters import FAMILIES, SMALL, family_model

HIDDEN, INTERMEDIATE = SMALL["hidden_size"], SMALL["intermediate_size"]


def random_selection(generator: torch.Generator) -> ChannelSelection:
    """A different random subset for each of S1..S5 (between a third and all of the width)."""
    def subset(width: int) -> tuple[int, ...]:
        size = int(torch.randint(width // 3, width + 1, (1,), generator=generator))
        return tuple(sorted(torch.randperm(width, generator=generator)[:max(size, 1)].tolist()))
    return ChannelSelection(subset(HIDDEN), subset(HIDDEN), subset(HIDDEN), subset(INTERMEDIATE), subset(HIDDEN))


def zeroed(model: torch.nn.Module, selections: list[ChannelSelection]) -> torch.nn.Module:
    """The dense model in its own class with every weight (and bias) outside the selection zeroed."""
    model = copy.deepcopy(model)

    def outside(width: int, kept) -> torch.Tensor:
        mask = torch.ones(width, dtype=torch.bool)
        mask[list(kept)] = False
        return mask

    with torch.no_grad():
        for layer, s in zip(decoder_layers(model), selections, strict=True):
            attn, mlp = layer.self_attn, layer.mlp
            for linear in (attn.q_proj, attn.k_proj, attn.v_proj):
                linear.weight[:, outside(HIDDEN, s.attn_in)] = 0
            attn.o_proj.weight[outside(HIDDEN, s.attn_out)] = 0
            for linear in (mlp.gate_proj, mlp.up_proj):
                linear.weight[:, outside(HIDDEN, s.mlp_in)] = 0
                linear.weight[outside(INTERMEDIATE, s.neurons)] = 0
            mlp.down_proj.weight[:, outside(INTERMEDIATE, s.neurons)] = 0
            mlp.down_proj.weight[outside(HIDDEN, s.mlp_out)] = 0
            for linear, rows in ((attn.o_proj, s.attn_out), (mlp.down_proj, s.mlp_out)):
                if linear.bias is not None:
                    linear.bias[outside(HIDDEN, rows)] = 0
            for linear in (mlp.gate_proj, mlp.up_proj):
                if linear.bias is not None:
                    linear.bias[outside(INTERMEDIATE, s.neurons)] = 0
    return model


@pytest.fixture
def ids():
    torch.manual_seed(1)
    return torch.randint(3, 160, (3, 12))


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_selected_channels_compute_the_dense_model_with_unselected_weights_zeroed(model_type, ids, tmp_path, tokenizer):
    model = family_model(model_type)
    generator = torch.Generator().manual_seed(7)
    selections = [random_selection(generator) for _ in decoder_layers(model)]
    expected = zeroed(model, selections)(ids).logits
    pruned = select_channels(copy.deepcopy(model), selections)
    assert isinstance(pruned, type(model))  # the family's own forward, norms and all
    assert pruned.model.layers[0].self_attn.q_proj.in_features == len(selections[0].attn_in)
    assert pruned.model.layers[1].mlp.down_proj.out_features == len(selections[1].mlp_out)
    torch.testing.assert_close(pruned(ids).logits, expected, atol=1e-5, rtol=1e-4)
    save_checkpoint(pruned, tokenizer, tmp_path / "ckpt", {"stage": "test"})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(loaded(ids).logits, expected, atol=1e-5, rtol=1e-4)
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", trust_remote_code=True)
    torch.testing.assert_close(plain(ids).logits, expected, atol=1e-5, rtol=1e-4)
    assert plain.generate(ids[:1, :4], max_new_tokens=5, do_sample=False).shape == (1, 9)  # kv cache through the hooks


def test_keeping_every_channel_changes_nothing_and_stores_no_indices(ids):
    model = family_model("llama")
    selections = [ChannelSelection.full(HIDDEN, INTERMEDIATE)] * SMALL["num_hidden_layers"]
    pruned = select_channels(copy.deepcopy(model), selections)
    # to float32 rounding: the variable-width class may attend with another kernel than eager
    torch.testing.assert_close(pruned(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-4)
    dense_blocks = sum(p.numel() for layer in decoder_layers(model) for name, p in layer.named_parameters()
                       if "_proj" in name)
    assert stored_block_entries(pruned) == dense_blocks  # whole layers list no channels
    assert pruned.config.residual_channels == [None] * SMALL["num_hidden_layers"]


def test_a_smaller_selection_stores_exactly_its_slices():
    model = family_model("llama")
    generator = torch.Generator().manual_seed(3)
    selections = [random_selection(generator) for _ in range(SMALL["num_hidden_layers"])]
    pruned = select_channels(copy.deepcopy(model), selections)
    q, kv = SMALL["num_attention_heads"] * SMALL["head_dim"], SMALL["num_key_value_heads"] * SMALL["head_dim"]
    expected = sum(len(s.attn_in) * (q + 2 * kv) + q * len(s.attn_out)  # the reference's GQA count
                   + 2 * len(s.mlp_in) * len(s.neurons) + len(s.neurons) * len(s.mlp_out)
                   + len(s.attn_in) + len(s.attn_out) + len(s.mlp_in) + len(s.mlp_out) for s in selections)
    assert stored_block_entries(pruned) == expected


def test_a_selection_that_cannot_be_a_checkpoint_is_named():
    full = ChannelSelection.full(HIDDEN, INTERMEDIATE)
    bad = ChannelSelection((), full.attn_out, (3, 1), full.neurons, (0, HIDDEN))
    problems = selection_problems([full, bad], HIDDEN, INTERMEDIATE)
    assert problems == ["layer 1: attn_in keeps nothing (the reference keeps at least one)",
                        f"layer 1: mlp_in must be sorted distinct indices in [0, {HIDDEN})",
                        f"layer 1: mlp_out must be sorted distinct indices in [0, {HIDDEN})"]
    with pytest.raises(ValueError, match="attn_in keeps nothing"):
        select_channels(family_model("llama"), [full, bad])


def test_llama_cpp_export_is_refused_with_the_reason(tokenizer, tmp_path):
    from structprune.export.gguf import ExportError, export_gguf

    model = family_model("llama")
    generator = torch.Generator().manual_seed(5)
    pruned = select_channels(model, [random_selection(generator) for _ in range(SMALL["num_hidden_layers"])])
    with pytest.raises(ExportError, match="own residual channels .DISP-LLM."):
        export_gguf(pruned, tokenizer, tmp_path / "m.gguf", tokenizer_pre="default")
    assert not (tmp_path / "m.gguf").exists()
