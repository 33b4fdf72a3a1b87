"""SLEB's and BlockPruner's greedy order searched once (stage depth-order) serves every
sparsity: each prune job's prefix is the removal a search to its own target makes."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from structprune.pruning.depth import greedy_order, prune_blocks, prune_sublayers
from test_depth import own_text, with_dead_blocks
from test_family_adapters import family_model


def block_size(model) -> int:
    return sum(p.numel() for p in model.model.layers[0].parameters())


def test_the_full_sleb_order_removes_every_candidate_dead_block_first():
    model = with_dead_blocks(family_model("llama", layers=5), [3])
    order = greedy_order(copy.deepcopy(model), "sleb", [1, 2, 3, 4], own_text(model), batch_size=2)
    assert order["order"][0] == 3 and sorted(order["order"]) == [1, 2, 3, 4]
    assert len(order["losses"]) == 4 and order["candidates"] == [1, 2, 3, 4] and order["n_layers"] == 5


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_a_prefix_of_the_sleb_order_is_the_search_to_each_target(blocks):
    """Greedy steps do not depend on the target: a search to 1, 2 or 3 blocks removes the
    order's first 1, 2 or 3 blocks, with the same losses, and the same model comes out."""
    model = family_model("llama", layers=6)
    ids = own_text(model)
    order = json.loads(json.dumps(greedy_order(copy.deepcopy(model), "sleb", [1, 2, 3, 4], ids, batch_size=2)))
    target = blocks * block_size(model)
    searched, report = prune_blocks(copy.deepcopy(model), "sleb", [1, 2, 3, 4], target, ids, batch_size=2)
    read, read_report = prune_blocks(copy.deepcopy(model), "sleb", [1, 2, 3, 4], target, ids, batch_size=2, order=order)
    assert read_report["removed_blocks"] == report["removed_blocks"] == order["order"][:blocks]
    assert read_report["calibration_loss_after_each"] == report["calibration_loss_after_each"]
    torch.testing.assert_close(read(ids).logits, searched(ids).logits, atol=0, rtol=0)


def test_a_prefix_of_the_blockpruner_order_is_the_search_to_each_target():
    model = family_model("qwen3", layers=4)
    ids = own_text(model)
    order = json.loads(json.dumps(greedy_order(copy.deepcopy(model), "blockpruner", [1, 2], ids, batch_size=2)))
    assert len(order["order"]) == 4 and order["order"][0] in (["attn", 1], ["attn", 2], ["mlp", 1], ["mlp", 2])
    layer = model.model.layers[1]
    for target in (sum(p.numel() for p in layer.self_attn.parameters()), sum(p.numel() for p in layer.mlp.parameters()),
                   block_size(model) * 1.5):
        searched, _ = prune_sublayers(copy.deepcopy(model), [1, 2], target, ids, batch_size=2)
        read, report = prune_sublayers(copy.deepcopy(model), [1, 2], target, ids, batch_size=2, order=order)
        assert read == searched and report["order_read"]


def test_an_order_of_another_criterion_or_range_is_refused_with_the_fix():
    model = family_model("llama", layers=5)
    ids = own_text(model)
    order = greedy_order(copy.deepcopy(model), "sleb", [1, 2, 3], ids, batch_size=2)
    with pytest.raises(ValueError, match="pass the order the depth-order stage made"):
        prune_blocks(copy.deepcopy(model), "sleb", [1, 2, 3, 4], block_size(model), ids, batch_size=2, order=order)
    with pytest.raises(ValueError, match="pass the order the depth-order stage made"):
        prune_sublayers(copy.deepcopy(model), [1, 2, 3], block_size(model), ids, batch_size=2, order=order)


def test_the_depth_order_command_feeds_the_prune_command(tmp_path):
    """depth-order then prune --order: the checkpoint equals prune's own search; an order made on
    other calibration text is refused before any pruning, naming the fix."""
    from tiny import save_tiny_checkpoint

    from structprune.cli import main
    from structprune.io.checkpoint import save_tensors
    from structprune.model.loading import load_checkpoint

    source = save_tiny_checkpoint(tmp_path / "src")
    torch.manual_seed(0)
    save_tensors({"input_ids": torch.randint(3, 150, (4, 16))}, tmp_path / "calib.safetensors", {})
    save_tensors({"input_ids": torch.randint(3, 150, (4, 16))}, tmp_path / "other.safetensors", {})
    common = ["--model", str(source), "--layers", "0:2", "--data", str(tmp_path / "calib.safetensors")]
    assert main(["depth-order", *common, "--method", "sleb", "--batch-size", "2", "--out", str(tmp_path / "order.json")]) == 0
    prune = ["prune", *common, "--unit", "blocks", "--method", "sleb", "--flow", "sequential", "--sparsity", "50",
             "--batch-size", "2"]
    assert main([*prune, "--out", str(tmp_path / "searched")]) == 0
    assert main([*prune, "--order", str(tmp_path / "order.json"), "--out", str(tmp_path / "read")]) == 0
    searched, _ = load_checkpoint(tmp_path / "searched")
    read, _ = load_checkpoint(tmp_path / "read")
    ids = torch.randint(3, 150, (2, 8))
    torch.testing.assert_close(read(ids).logits, searched(ids).logits, atol=0, rtol=0)
    other = [w if w != str(tmp_path / "calib.safetensors") else str(tmp_path / "other.safetensors") for w in prune]
    assert main([*other, "--order", str(tmp_path / "order.json"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_the_workflow_searches_each_greedy_order_once_for_every_sparsity(tmp_path):
    """One depth_order job per greedy method; each sparsity's prune job reads it (--order);
    ShortGPT, ranked once on the dense model, needs none."""
    from tiny import save_tiny_checkpoint, tiny_mirror
    from workflow_helpers import planned_jobs, snakemake, tiny_config, write_config

    save_tiny_checkpoint(tmp_path / "tiny-src")
    tiny_mirror(tmp_path / "mirror")
    (workdir := tmp_path / "run").mkdir()
    cfg = tiny_config(tmp_path)
    depth = {"calib": "wikitext2", "layers": [0, 2]}
    cfg["methods"] = {"sleb": {"score": "sleb", "unit": "blocks", "flow": "sequential", **depth},
                      "bp": {"score": "blockpruner", "unit": "sublayers", "flow": "sequential", **depth},
                      "short": {"score": "block_influence", "unit": "blocks", **depth}}
    cfg.pop("heldout")
    cfg["sparsities"] = [20, 50]
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir)
    assert sorted(w for r, w in jobs if r == "depth_order") == [
        "model=tiny, calib=wikitext2, method=bp", "model=tiny, calib=wikitext2, method=sleb"]
    commands = [line for line in snakemake(workdir, "--dry-run", "--printshellcmds").stdout.splitlines()
                if " prune --model" in line]
    assert len(commands) == 6
    for command in commands:
        assert ("--order results/tiny/wikitext2/" in command) == ("--method block_influence" not in command), command


def test_a_blockpruner_row_is_planned_without_a_gguf_export_and_says_why():
    """llama.cpp's deci drops a layer's attention output when its MLP is empty (the export
    refuses such a file): BlockPruner rows are timed in transformers alone, as the note says."""
    from structprune.spec.modelcheck import method_export_skips

    cfg = {"export": {"enabled": True}, "methods": {
        "bp": {"score": "blockpruner", "unit": "sublayers"}, "sleb": {"score": "sleb", "unit": "blocks"},
        "flap": {"score": "flap", "unit": "width"}}}
    skips = method_export_skips(cfg)
    assert set(skips) == {"bp"} and "deci graph drops a layer's attention output" in skips["bp"]
    assert method_export_skips({**cfg, "export": {"enabled": False}}) == {}
