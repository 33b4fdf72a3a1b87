"""Choosing settings on held-out calibration text: the grid, the loss, the choice."""

import copy
import math

import pytest
import torch

from structprune.calibration.statistics import collect_statistics
from structprune.pruning.selection import candidate_recipes, heldout_loss, select_recipe
from structprune.spec.recipe import Recipe


def test_candidate_grid_overrides_fields_and_options_in_order():
    base = Recipe("distribution", options={"tau": 0.16})
    grid = {"damp": [0.01, 1.0], "options.tau": [0.1, 0.2]}
    got = [(o, r.damp, r.options["tau"]) for o, r in candidate_recipes(base, grid)]
    assert got == [
        ({"damp": 0.01, "options.tau": 0.1}, 0.01, 0.1), ({"damp": 0.01, "options.tau": 0.2}, 0.01, 0.2),
        ({"damp": 1.0, "options.tau": 0.1}, 1.0, 0.1), ({"damp": 1.0, "options.tau": 0.2}, 1.0, 0.2),
    ]
    with pytest.raises(ValueError, match="not recipe choices"):
        candidate_recipes(base, {"dmap": [1]})


def test_heldout_loss_of_a_uniform_model_is_log_vocabulary(model):
    torch.nn.init.zeros_(model.lm_head.weight)  # tied: zero embeddings too, so every logit is 0
    ids = torch.randint(0, model.config.vocab_size, (3, 9))
    assert heldout_loss(model, ids) == pytest.approx(math.log(model.config.vocab_size), rel=1e-5)


def test_selection_keeps_the_lowest_heldout_loss_and_reports_every_candidate(model, input_ids):
    dense = copy.deepcopy(model)
    stats, _ = collect_statistics(model, input_ids, progress=False)
    heldout = torch.randint(3, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(5))
    base = Recipe("distribution", options={"redundancy": "none"}, flow="sequential")
    grid = {"reconstruct": ["none", "refit"], "allocation": ["uniform", "global"]}
    result, chosen, candidates = select_recipe(model, base, grid, 0.3, heldout=heldout, samples=input_ids,
                                               stats=stats, batch_size=3, progress=False)
    chosen = candidates[chosen].recipe
    ran = [c for c in candidates if c.heldout_loss is not None]
    skipped = [c for c in candidates if c.skipped]
    assert len(candidates) == 4 and len(ran) == 2 and len(skipped) == 2  # global needs kv-group heads
    assert all("set heads: kv_groups" in c.skipped for c in skipped)
    best = min(ran, key=lambda c: c.heldout_loss)
    assert chosen == best.recipe
    assert heldout_loss(result.model, heldout) == pytest.approx(best.heldout_loss)
    for a, b in zip(model.parameters(), dense.parameters()):  # the caller's model is untouched
        assert torch.equal(a, b)


def test_select_from_the_command_line_records_every_candidate(tmp_path):
    import json

    from tiny import save_tiny_checkpoint

    from structprune.cli import main
    from structprune.io.checkpoint import save_tensors

    model = save_tiny_checkpoint(tmp_path / "model")
    generator = torch.Generator().manual_seed(0)
    for name in ("calib", "heldout"):
        save_tensors({"input_ids": torch.randint(3, 150, (4, 16), generator=generator)}, tmp_path / f"{name}.safetensors", {})
    out = tmp_path / "chosen"
    common = ["--model", str(model), "--method", "l1", "--sparsity", "30", "--flow", "sequential",
              "--data", str(tmp_path / "calib.safetensors"), "--out", str(out)]
    assert main(["select", *common, "--heldout", str(tmp_path / "missing"), ]) == 2
    assert main(["select", *common, "--heldout", str(tmp_path / "heldout.safetensors"),
                 "--grid", "reconstruct=none,refit", "--grid", "damp=0.01,1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    losses = [c["heldout_loss"] for c in manifest["candidates"]]
    assert len(losses) == 4 and all(loss is not None for loss in losses)
    chosen = manifest["candidates"][losses.index(min(losses))]["overrides"]
    assert {k: manifest["recipe"][k] for k in chosen} == chosen
    assert manifest["inputs"]["heldout"]["sha256"]
    # select.at: another sparsity runs only the candidate chosen here, and says where it was chosen
    at40 = ["--model", str(model), "--method", "l1", "--sparsity", "40", "--flow", "sequential",
            "--data", str(tmp_path / "calib.safetensors"), "--heldout", str(tmp_path / "heldout.safetensors"),
            "--grid", "reconstruct=none,refit", "--grid", "damp=0.01,1", "--chosen-in", str(out)]
    assert main(["select", *at40, "--out", str(tmp_path / "at40")]) == 0
    reused = json.loads((tmp_path / "at40" / "manifest.json").read_text())
    assert [c["overrides"] for c in reused["candidates"]] == [chosen] and reused["candidates"][0]["chosen"]
    assert reused["parameters"]["chosen_at"] == 0.3 and reused["parameters"]["grid"] == manifest["parameters"]["grid"]
    assert reused["inputs"]["chosen_in"]["sha256"]
    # --rechoose: damp as chosen at 30 %, reconstruct chosen again here among both values
    assert main(["select", *at40, "--rechoose", "reconstruct", "--out", str(tmp_path / "re40")]) == 0
    again = json.loads((tmp_path / "re40" / "manifest.json").read_text())
    assert [c["overrides"] for c in again["candidates"]] == [{"reconstruct": r, "damp": chosen["damp"]} for r in ("none", "refit")]
    assert again["parameters"]["rechoose"] == ["reconstruct"] and sum(c["chosen"] for c in again["candidates"]) == 1
    assert main(["select", *at40, "--rechoose", "colour", "--out", str(tmp_path / "bad")]) == 2  # not a grid key
    assert main(["select", *at40[:-2], "--rechoose", "damp", "--out", str(tmp_path / "bad")]) == 2  # without --chosen-in
    assert not (tmp_path / "bad").exists()
    # a choice made for another grid is refused, naming the checkpoint
    other = [a if a != "damp=0.01,1" else "damp=0.01,3" for a in at40]
    assert main(["select", *other, "--out", str(tmp_path / "other")]) == 2
    assert not (tmp_path / "other").exists()


def test_a_candidate_that_cannot_reach_the_sparsity_is_skipped_not_fatal(model, input_ids):
    heldout = torch.randint(3, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
    base = Recipe("l1")
    # at 80 % of each block, the MLP alone cannot carry the cut: mlp_only raises, matched runs
    result, chosen, candidates = select_recipe(model, base, {"budget": ["mlp_only", "matched"]}, 0.8,
                                               heldout=heldout, progress=False)
    assert candidates[0].heldout_loss is None and "would remove every MLP neuron" in candidates[0].skipped
    assert chosen == 1 and candidates[1].heldout_loss is not None
    assert candidates[0].to_json()["heldout_ppl"] is None and candidates[1].to_json(True)["chosen"]


def test_a_choice_that_cannot_run_at_another_sparsity_is_made_again_there_and_says_so(tmp_path):
    """select.at keeps the budget chosen at 30 %; at 80 % of the blocks `mlp_only` would remove
    every MLP neuron, so every key is chosen again on the same held-out text (the manifest's
    rechoose lists them) instead of failing the job."""
    import json

    from tiny import save_tiny_checkpoint

    from structprune.cli import main
    from structprune.io.checkpoint import save_tensors

    model = save_tiny_checkpoint(tmp_path / "model")
    generator = torch.Generator().manual_seed(0)
    for name in ("calib", "heldout"):
        save_tensors({"input_ids": torch.randint(3, 150, (4, 16), generator=generator)}, tmp_path / f"{name}.safetensors", {})
    common = ["--model", str(model), "--method", "l1", "--flow", "sequential", "--layers", "all",
              "--data", str(tmp_path / "calib.safetensors"), "--heldout", str(tmp_path / "heldout.safetensors"),
              "--grid"]
    grid = [*common, "budget=mlp_only,matched"]
    assert main(["select", *grid, "--sparsity", "30", "--out", str(tmp_path / "both30")]) == 0
    first = json.loads((tmp_path / "both30" / "manifest.json").read_text())
    if [c for c in first["candidates"] if c["chosen"]][0]["overrides"] != {"budget": "mlp_only"}:
        pytest.skip("the held-out text preferred matched at 30 %: nothing to fall back from")
    assert main(["select", *grid, "--sparsity", "80", "--chosen-in", str(tmp_path / "both30"),
                 "--out", str(tmp_path / "at80")]) == 0
    again = json.loads((tmp_path / "at80" / "manifest.json").read_text())
    assert again["parameters"]["rechoose"] == ["budget"]
    assert [c["overrides"]["budget"] for c in again["candidates"]] == ["mlp_only", "matched"]
    assert [c["chosen"] for c in again["candidates"]] == [False, True] and again["candidates"][0]["skipped"]


def test_a_choice_recorded_before_a_recipe_field_existed_is_still_this_jobs(tmp_path):
    """A select checkpoint written before `unit` existed (its base recipe lacks the field) answers
    the same question as today's recipe with unit at its default, not another one."""
    import json

    from structprune.io.artifacts import write_stage_json
    from structprune.pruning.selection import chosen_grid

    base = Recipe("l1", flow="sequential")
    recorded = {k: v for k, v in json.loads(json.dumps(base.to_json())).items() if k != "unit"}
    grid = {"damp": [0.01, 1.0]}
    write_stage_json(tmp_path / "manifest.json", {
        "stage": "select", "parameters": {"base_recipe": recorded, "grid": grid, "sparsity": 0.2},
        "candidates": [{"overrides": {"damp": 1.0}, "chosen": True}]}, "select")
    assert chosen_grid(str(tmp_path), base, grid) == ({"damp": [1.0]}, 0.2)
    with pytest.raises(ValueError, match="chosen for another recipe"):
        chosen_grid(str(tmp_path), Recipe("l1", flow="sequential", unit="blocks"), grid)
