"""Width plus depth (ours, `depth_share`, pruning/mixed.py): whole blocks by Block Influence
first, the rest of the target by width over the blocks left, refits aimed at the dense stream."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import tiny_tokenizer

from structprune.io.checkpoint import save_checkpoint
from structprune.model.geometry import count_parameters, model_geometries
from structprune.model.loading import load_checkpoint
from structprune.pruning.depth import remove_blocks
from structprune.pruning.engine import prune_with_recipe
from structprune.pruning.mixed import width_ratios
from structprune.spec.configcheck import grid_problems
from structprune.spec.recipe import Recipe, recipe_problems
from test_depth import own_text, with_dead_blocks
from test_family_adapters import family_model

OURS = {"score": "distribution", "options": {"mlp": "output", "redundancy": "none"}, "flow": "sequential",
        "reconstruct": "refit"}


def test_the_width_ratio_takes_what_the_dropped_blocks_leave():
    geometries = model_geometries(family_model("llama", layers=6))
    size = geometries[0].block_params
    ratios = width_ratios(geometries, 0.45, (1, 5), [2], "uniform")
    assert ratios[1] == 0.0 and len(set(ratios[:1] + ratios[2:])) == 1
    assert sum(r * size for r in ratios) + size == pytest.approx(0.45 * 4 * size)  # the range's target, exactly
    increasing = width_ratios(geometries, 0.45, (1, 5), [2], "increasing")
    assert increasing[1] == 0.0 and increasing[0] < increasing[2] < increasing[3]
    assert sum(increasing) == pytest.approx(sum(ratios))


def test_a_dead_block_is_dropped_and_the_rest_is_the_width_cut_of_the_model_without_it():
    """Known answer: a block adding nothing has Block Influence 0, so a depth share of one block
    drops it; the dense stream passes it unchanged, so the mixed cut is the width cut (with its
    refits) of the model that never had it, at the same per-layer budgets."""
    model = with_dead_blocks(family_model("llama", layers=6), [3])
    ids = own_text(model, n=6, length=16)
    size = sum(p.numel() for p in model.model.layers[0].parameters())
    sparsity = 0.3  # of 6 blocks over the range [1, 5): 1.8 blocks; a share of 0.55 is nearest 1 block
    mixed = prune_with_recipe(copy.deepcopy(model), Recipe(**OURS, layers=[1, 5], depth_share=0.55), sparsity,
                              samples=ids, batch_size=2, progress=False)
    assert mixed.notes["depth"]["dropped_blocks"] == [3] and mixed.model.config.num_hidden_layers == 5
    # the same per-layer ratio on the model without the block: (1.8 - 1) blocks over the 3 left, of 5 blocks
    without = remove_blocks(copy.deepcopy(model), [3])
    reference = prune_with_recipe(without, Recipe(**OURS, layers=[1, 4]), (1.8 - 1) / 5, samples=ids, batch_size=2,
                                  progress=False)
    assert mixed.plan == reference.plan
    torch.testing.assert_close(mixed.model(ids).logits, reference.model(ids).logits, atol=1e-5, rtol=1e-5)
    removed = 1 - count_parameters(mixed.model)["decoder_blocks"] / count_parameters(model)["decoder_blocks"]
    assert abs(removed - sparsity) < 0.02 and size > 0


def test_a_mixed_checkpoint_loads_back_as_the_same_model(tmp_path):
    model = family_model("qwen3", layers=6)
    ids = own_text(model, n=4, length=12)
    result = prune_with_recipe(model, Recipe(**OURS, layers=[1, 5], depth_share=0.5), 0.4, samples=ids, batch_size=2,
                               progress=False)
    assert len(result.notes["depth"]["dropped_blocks"]) >= 1
    save_checkpoint(result.model, tiny_tokenizer(), tmp_path / "ckpt", {"stage": "test"})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.num_hidden_layers == 6 - len(result.notes["depth"]["dropped_blocks"])
    torch.testing.assert_close(loaded(ids).logits, result.model(ids).logits, atol=1e-5, rtol=1e-5)


def test_depth_share_is_checked_where_it_is_given():
    assert Recipe(score="l1", depth_share=0.25).needs_samples
    assert "depth_share" not in Recipe(score="l1").to_json()  # width-only manifests stay as they were
    assert any("must be a number >= 0 and < 1" in p for p in recipe_problems(Recipe(score="l1", depth_share=1.0)))
    assert any("use allocation uniform or increasing" in p
               for p in recipe_problems(Recipe(score="flap", heads="kv_groups", allocation="global", depth_share=0.2)))
    assert any("unit width only" in p for p in recipe_problems(Recipe(score="sleb", unit="blocks", flow="sequential",
                                                                     depth_share=0.2)))
    assert grid_problems("distribution", {"depth_share": [0, 0.25, 0.5]}) == []
    assert grid_problems("distribution", {"depth_share": [0, 1.5]}) == ["grid.depth_share: 1.5 must be a number >= 0 and < 1 (0: width only)"]


def test_prune_and_select_take_a_depth_share_from_the_command_line(tmp_path):
    import json

    from tiny import save_tiny_checkpoint, tiny_mirror

    from structprune.cli import main

    model, mirror = tmp_path / "model", tiny_mirror(tmp_path / "mirror")
    assert main(["model", "--source", str(save_tiny_checkpoint(tmp_path / "src")), "--out", str(model)]) == 0
    calib, heldout = tmp_path / "calib.safetensors", tmp_path / "heldout.safetensors"
    for out, seed in ((calib, "0"), (heldout, "7")):
        assert main(["data-calib", "--dataset", "wikitext2", "--split", "validation", "--tokenizer", str(model), "--seed", seed,
                     "--mirror", str(mirror), "--n-samples", "4", "--seq-len", "16", "--out", str(out)]) == 0
    recipe = ["--model", str(model), "--method", "wanda_sp", "--flow", "sequential", "--reconstruct", "refit",
              "--data", str(calib), "--sparsity", "60", "--batch-size", "2"]
    assert main(["prune", *recipe, "--depth-share", "0.9", "--out", str(tmp_path / "mixed")]) == 0
    manifest = json.loads((tmp_path / "mixed" / "manifest.json").read_text())
    assert len(manifest["depth"]["dropped_blocks"]) == 1 and manifest["parameters"]["recipe"]["depth_share"] == 0.9
    assert json.loads((tmp_path / "mixed" / "config.json").read_text())["num_hidden_layers"] == 1
    assert main(["select", *recipe, "--grid", "depth_share=0,0.9", "--heldout", str(heldout), "--out", str(tmp_path / "sel")]) == 0
    candidates = json.loads((tmp_path / "sel" / "manifest.json").read_text())["candidates"]
    assert [c["overrides"] for c in candidates] == [{"depth_share": 0}, {"depth_share": 0.9}]
    assert all(c["heldout_loss"] is not None for c in candidates)


def test_a_cached_dense_stream_passes_the_dropped_blocks_as_the_live_one_does(tmp_path):
    from structprune.calibration.densestream import record_dense_stream

    model = family_model("llama", layers=6)
    ids = own_text(model, n=6, length=16)
    recipe = Recipe(**OURS, layers=[1, 5], depth_share=0.5)
    record_dense_stream(copy.deepcopy(model), ids, 2, tmp_path / "dense", {"stage": "test"}, progress=False)
    live = prune_with_recipe(copy.deepcopy(model), recipe, 0.4, samples=ids, batch_size=2, progress=False)
    cached = prune_with_recipe(copy.deepcopy(model), recipe, 0.4, samples=ids, batch_size=2, progress=False,
                               dense_stream=str(tmp_path / "dense"))
    assert live.notes["depth"]["dropped_blocks"] and live.plan == cached.plan
    for key, value in live.model.state_dict().items():
        assert torch.equal(value, cached.model.state_dict()[key]), key
