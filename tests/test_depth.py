"""Depth pruning (recipe unit: blocks; pruning/depth.py): known answers. A block whose updates
are zero has Block Influence 0 and is the one SLEB removes first; removing such blocks leaves
every family's logits unchanged, in its own class, through a saved checkpoint; the number of
blocks brings the removed parameters nearest the target."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import tiny_tokenizer

from structprune.calibration.streams import capture_layer_inputs
from structprune.io.checkpoint import save_checkpoint
from structprune.model.loading import load_checkpoint
from structprune.pruning.depth import block_influence, enough_blocks, prune_blocks, remove_blocks
from structprune.pruning.engine import prune_with_recipe
from structprune.spec.recipe import Recipe, recipe_problems
from test_family_adapters import FAMILIES, family_model


def with_dead_blocks(model, blocks):
    """Blocks whose attention and MLP add nothing to the residual stream (their o_proj and
    down_proj are zero; post-norms of zero are zero)."""
    with torch.no_grad():
        for index in blocks:
            layer = model.model.layers[index]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model


@pytest.fixture
def ids():
    torch.manual_seed(1)
    return torch.randint(3, 160, (4, 12))


def test_enough_blocks_stops_nearest_the_target():
    sizes = [10] * 5
    assert enough_blocks(sizes, [3, 1, 0], 20) == [3, 1]
    assert enough_blocks(sizes, [3, 1, 0], 25) == [3, 1]  # a tie stays below
    assert enough_blocks(sizes, [3, 1, 0], 26) == [3, 1, 0]
    assert enough_blocks(sizes, [3, 1, 0], 4) == []


def test_block_influence_of_a_block_that_adds_nothing_is_zero(ids):
    model = with_dead_blocks(family_model("llama", layers=4), [2])
    scores = block_influence(model, capture_layer_inputs(model, ids, batch_size=2))
    assert float(scores[2]) == pytest.approx(0.0, abs=1e-12)
    assert all(float(scores[i]) > 1e-3 for i in (0, 1, 3))


def own_text(model, n: int = 4, length: int = 12) -> torch.Tensor:
    """Sequences the model writes itself (greedy from random starts): text it predicts well, so
    removing a block that does something raises its loss, as real calibration text does."""
    torch.manual_seed(2)
    ids = torch.randint(3, 160, (n, 1))
    with torch.no_grad():
        for _ in range(length - 1):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids


@pytest.mark.parametrize("criterion", ["block_influence", "sleb"])
def test_each_criterion_removes_the_useless_block_first(criterion):
    model = with_dead_blocks(family_model("llama", layers=4), [2])
    ids = own_text(model)
    dense = model(ids).logits
    pruned, report = prune_blocks(copy.deepcopy(model), criterion, [1, 2, 3], 0.9 * sum(
        p.numel() for p in model.model.layers[0].parameters()), ids, batch_size=2)
    assert report["removed_blocks"] == [2] and len(pruned.model.layers) == 3
    torch.testing.assert_close(pruned(ids).logits, dense, atol=1e-5, rtol=1e-5)


def test_sleb_is_greedy_on_the_model_as_it_is_cut():
    """Two blocks to remove: the dead one first, then one chosen on the model without it (the
    loss after each removal is reported, and grows)."""
    model = with_dead_blocks(family_model("llama", layers=5), [3])
    ids = own_text(model)
    block = sum(p.numel() for p in model.model.layers[0].parameters())
    _, report = prune_blocks(copy.deepcopy(model), "sleb", [1, 2, 3, 4], 2 * block, ids, batch_size=2)
    assert report["removed_blocks"][0] == 3 and len(report["removed_blocks"]) == 2
    losses = report["calibration_loss_after_each"]
    assert losses[0] <= losses[1]


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_removing_dead_blocks_keeps_every_familys_logits_through_a_checkpoint(model_type, ids, tmp_path):
    """Layer types (sliding windows, NoPE layers) follow their layers; the checkpoint loads as
    the family's own class with fewer layers and computes the same logits."""
    model = with_dead_blocks(family_model(model_type, layers=4), [1, 2])
    dense = model(ids).logits
    pruned = remove_blocks(copy.deepcopy(model), [1, 2])
    assert pruned.config.num_hidden_layers == 2
    for key in ("layer_types", "no_rope_layers"):
        if isinstance(getattr(model.config, key, None), list):
            assert getattr(pruned.config, key) == [getattr(model.config, key)[i] for i in (0, 3)]
    torch.testing.assert_close(pruned(ids).logits, dense, atol=1e-5, rtol=1e-4)
    save_checkpoint(pruned, tiny_tokenizer(), tmp_path / "ckpt", {"stage": "test"})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded).__name__ == FAMILIES[model_type][2] and len(loaded.model.layers) == 2
    torch.testing.assert_close(loaded(ids).logits, dense, atol=1e-5, rtol=1e-4)


def test_the_engine_removes_blocks_at_the_recipes_sparsity_within_its_range(ids):
    model = family_model("llama", layers=6)
    recipe = Recipe("block_influence", unit="blocks", layers=[1, 5])
    result = prune_with_recipe(copy.deepcopy(model), recipe, 1 / 3, samples=ids, batch_size=2, progress=False)
    removed = result.reports[0]["removed_blocks"]
    assert len(removed) == 2 and all(1 <= i < 5 for i in removed)
    assert len(result.model.model.layers) == 4 and len(result.plan.layers) == 4


def test_recipes_that_mix_depth_and_width_are_refused_with_the_fix():
    assert any("takes a whole-model criterion (block_influence, sleb)" in p for p in recipe_problems(Recipe("l2", unit="blocks")))
    assert any("it removes blocks: set unit: blocks" in p for p in recipe_problems(Recipe("sleb")))
    assert any("set flow: sequential" in p for p in recipe_problems(Recipe("sleb", unit="blocks")))
    assert any("set flow: dense" in p for p in recipe_problems(Recipe("block_influence", unit="blocks", flow="sequential")))
    assert any("reconstruct: none" in p for p in recipe_problems(
        Recipe("block_influence", unit="blocks", reconstruct="bias")))
    assert recipe_problems(Recipe("sleb", unit="blocks", flow="sequential")) == []


def test_the_prune_command_removes_blocks_and_writes_a_loadable_checkpoint(tmp_path):
    from tiny import save_tiny_checkpoint

    from structprune.cli import main
    from structprune.io.checkpoint import save_tensors

    source = save_tiny_checkpoint(tmp_path / "src")
    torch.manual_seed(0)
    save_tensors({"input_ids": torch.randint(3, 150, (4, 16))}, tmp_path / "calib.safetensors", {})
    out = tmp_path / "out"
    assert main(["prune", "--model", str(source), "--unit", "blocks", "--method", "sleb", "--flow", "sequential",
                 "--layers", "0:2", "--data", str(tmp_path / "calib.safetensors"), "--sparsity", "50",
                 "--out", str(out)]) == 0
    loaded, _ = load_checkpoint(out)
    assert len(loaded.model.layers) == 1 and loaded.config.num_hidden_layers == 1
    assert main(["prune", "--model", str(source), "--unit", "blocks", "--method", "sleb", "--layers", "0:2",
                 "--data", str(tmp_path / "calib.safetensors"), "--sparsity", "50", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # flow dense with sleb: refused before any work


def with_dead_sublayers(model, attention: int, mlp: int):
    with torch.no_grad():
        model.model.layers[attention].self_attn.o_proj.weight.zero_()
        model.model.layers[mlp].mlp.down_proj.weight.zero_()
    return model


def sublayer_size(model, kind: str, index: int) -> int:
    layer = model.model.layers[index]
    return sum(p.numel() for p in (layer.self_attn if kind == "attn" else layer.mlp).parameters())


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_blockpruner_removes_the_dead_sublayers_and_every_family_loads_them_back(model_type, tmp_path):
    """A dead attention (layer 1) and a dead MLP (layer 2): removing them changes nothing, in
    memory and through a saved checkpoint of the family's variable-width class (zero heads:
    the attention is skipped; zero neurons: the MLP adds nothing)."""
    model = with_dead_sublayers(family_model(model_type, layers=4), attention=1, mlp=2)
    ids = own_text(model)
    dense = model(ids).logits
    target = sublayer_size(model, "attn", 1) + sublayer_size(model, "mlp", 2)
    total = sum(p.numel() for p in model.model.layers.parameters())
    recipe = Recipe("blockpruner", unit="sublayers", flow="sequential", layers=[1, 3])
    result = prune_with_recipe(copy.deepcopy(model), recipe, target / total, samples=ids, batch_size=2, progress=False)
    assert result.reports[0]["removed_sublayers"] == [["attn", 1], ["mlp", 2]]
    torch.testing.assert_close(result.model(ids).logits, dense, atol=1e-5, rtol=1e-4)
    assert result.model.config.layer_widths[1][:2] == [0, 0] and result.model.config.layer_widths[2][2] == 0
    save_checkpoint(result.model, tiny_tokenizer(), tmp_path / "ckpt", {"stage": "test"})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(loaded(ids).logits, dense, atol=1e-5, rtol=1e-4)


def test_blockpruner_and_sleb_need_their_own_unit():
    assert any("set unit: sublayers" in p for p in recipe_problems(Recipe("blockpruner", unit="blocks", flow="sequential")))
    assert any("set unit: blocks" in p for p in recipe_problems(Recipe("sleb", unit="sublayers", flow="sequential")))
    assert any("takes a whole-model criterion" in p for p in recipe_problems(Recipe("l2", unit="sublayers")))
    assert recipe_problems(Recipe("blockpruner", unit="sublayers", flow="sequential")) == []
