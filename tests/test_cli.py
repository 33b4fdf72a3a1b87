import torch
from tiny import save_tiny_checkpoint, tiny_mirror

from structprune.cli import main
from structprune.io.checkpoint import load_tensors


def test_stages_run_from_the_command_line(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "src")
    mirror = tiny_mirror(tmp_path / "mirror")
    model = tmp_path / "model"
    assert main(["model", "--source", str(ckpt), "--out", str(model)]) == 0
    calib = tmp_path / "calib.safetensors"
    assert main(["data-calib", "--dataset", "wikitext2", "--split", "validation", "--tokenizer", str(model),
                 "--mirror", str(mirror), "--n-samples", "4", "--seq-len", "16", "--out", str(calib)]) == 0
    stats = tmp_path / "stats.safetensors"
    assert main(["calibrate", "--model", str(model), "--data", str(calib), "--out", str(stats)]) == 0
    assert load_tensors(stats)["layers.0.mlp_in.second_moment"].dtype == torch.float64
    scores = tmp_path / "scores.safetensors"
    assert main(["score", "--model", str(model), "--method", "random", "--option", "seed=3", "--out", str(scores)]) == 0
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(model), "--method", "random", "--option", "seed=3", "--scores", str(scores),
                 "--sparsity", "30", "--out", str(pruned)]) == 0
    manifest = __import__("json").loads((pruned / "manifest.json").read_text())
    assert abs(manifest["achieved_block_sparsity"] - 0.3) < 0.03
    assert manifest["inputs"]["scores"]["sha256"]


def test_peer_prune_options_fail_fast_with_a_message(tmp_path, caplog):
    model = save_tiny_checkpoint(tmp_path / "model")
    scores = tmp_path / "scores.safetensors"
    assert main(["score", "--model", str(model), "--method", "l2", "--out", str(scores)]) == 0
    common = ["prune", "--model", str(model), "--scores", str(scores), "--sparsity", "20"]
    common += ["--method", "l2"]
    assert main([*common, "--reconstruct", "bias", "--out", str(tmp_path / "a")]) == 2
    assert "bias compensation in the dense flow needs the dense calibration statistics (--stats)" in caplog.text
    assert main([*common, "--allocation", "global", "--out", str(tmp_path / "b")]) == 2
    assert "set heads: kv_groups" in caplog.text
    assert main([*common, "--layers", "0:9", "--out", str(tmp_path / "c")]) == 2
    assert "outside the model's 2 layers" in caplog.text
    assert main(["prune", "--model", str(model), "--method", "l2", "--flow", "sequential", "--sparsity", "20",
                 "--out", str(tmp_path / "d")]) == 2
    assert "pass them (--data)" in caplog.text
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_bad_inputs_fail_fast_with_a_message(tmp_path, caplog):
    assert main(["calibrate", "--model", str(tmp_path / "nope"), "--data", "x", "--out", str(tmp_path / "s")]) == 2
    assert "no config.json" in caplog.text
    assert main(["model", "--source", "gguf-package:not_a_package", "--out", str(tmp_path / "m")]) == 2
    assert "is not installed" in caplog.text
    assert main(["data-eval", "--dataset", "ptb", "--split", "test", "--tokenizer", "x",
                 "--mirror", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "data mirror" in caplog.text
    assert not (tmp_path / "m").exists() and not (tmp_path / "s").exists()


def test_model_limits_stop_a_stage_before_its_work(tmp_path, caplog):
    from tiny import save_tiny_checkpoint

    model = save_tiny_checkpoint(tmp_path / "m")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    assert main(["data-calib", "--dataset", "selfgen", "--model", str(model), "--n-samples", "2", "--seq-len", "8",
                 "--start-token", str(config.vocab_size), "--out", str(tmp_path / "a.safetensors")]) == 2
    assert f"start token {config.vocab_size} is outside the vocabulary" in caplog.text
    too_long = config.max_position_embeddings + 1
    assert main(["data-calib", "--dataset", "selfgen", "--model", str(model), "--n-samples", "2", "--seq-len",
                 str(too_long), "--out", str(tmp_path / "b.safetensors")]) == 2
    assert f"{too_long}-token samples exceed the model's" in caplog.text
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()


def test_prune_reads_a_dense_stream_cache_of_its_own_model_and_samples_only(tmp_path, caplog):
    from safetensors.torch import load_file

    from structprune.io.checkpoint import save_tensors

    model = save_tiny_checkpoint(tmp_path / "model")
    calib, other = tmp_path / "calib.safetensors", tmp_path / "other.safetensors"
    ids = torch.randint(3, 60, (5, 16), generator=torch.Generator().manual_seed(0))
    save_tensors({"input_ids": ids}, calib, {})
    save_tensors({"input_ids": ids.flip(0)}, other, {})
    dense = tmp_path / "dense"
    assert main(["dense-stream", "--model", str(model), "--data", str(calib), "--batch-size", "2", "--out", str(dense)]) == 0
    recipe = ["prune", "--model", str(model), "--method", "distribution", "--flow", "sequential", "--reconstruct", "paper",
              "--layers", "all", "--sparsity", "30", "--batch-size", "2"]
    assert main([*recipe, "--data", str(calib), "--out", str(tmp_path / "live")]) == 0
    assert main([*recipe, "--data", str(calib), "--dense-stream", str(dense), "--out", str(tmp_path / "cached")]) == 0
    live, cached = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("live", "cached"))
    assert live.keys() == cached.keys() and all(torch.equal(live[k], cached[k]) for k in live)
    manifest = __import__("json").loads((tmp_path / "cached" / "manifest.json").read_text())
    assert manifest["inputs"]["dense_stream"]["sha256"]
    # another sample set, or another batch size: refused before the model is loaded, with the fix
    assert main([*recipe, "--data", str(other), "--dense-stream", str(dense), "--out", str(tmp_path / "x")]) == 2
    assert "recorded on another data than" in caplog.text and "Rebuild it with `python -m structprune dense-stream" in caplog.text
    assert main([*recipe[:-1], "4", "--data", str(calib), "--dense-stream", str(dense), "--out", str(tmp_path / "y")]) == 2
    assert "recorded in batches of 2, this job runs batches of 4" in caplog.text
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
