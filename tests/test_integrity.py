"""Damaged artifacts are recognised (truncated safetensors, unparsable JSON), named by the
stage that reads them, and named by the workflow with the command that rebuilds them."""

from __future__ import annotations

import json

import pytest
import torch

from structprune.io.checkpoint import DamagedArtifactError, load_tensors, save_tensors
from structprune.io.integrity import checkpoint_problem, damaged_artifacts, safetensors_problem


def write_stats(path):
    save_tensors({"a": torch.arange(12.0).reshape(3, 4), "b": torch.ones(5, dtype=torch.float64)}, path, {"k": 1})


def test_a_whole_safetensors_file_passes_and_a_truncated_one_is_named(tmp_path):
    path = tmp_path / "stats.safetensors"
    write_stats(path)
    assert safetensors_problem(path) is None
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    assert "truncated" in safetensors_problem(path)
    with pytest.raises(DamagedArtifactError, match=r"stats.safetensors is damaged: .*truncated.*--forcerun"):
        load_tensors(path)
    path.write_bytes(data[:5])
    assert "shorter than a safetensors header" in safetensors_problem(path)
    path.write_bytes(data[:8] + b"x" * (len(data) - 8))
    assert "not JSON" in safetensors_problem(path)


def test_damaged_artifacts_finds_checkpoints_and_json_and_skips_writes_in_progress(tmp_path):
    ckpt = tmp_path / "results" / "m" / "c" / "x" / "s20" / "pruned"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{garbage")
    write_stats(ckpt / "model.safetensors")
    assert checkpoint_problem(ckpt).startswith("config.json: not JSON")
    whole = tmp_path / "results" / "m" / "calib" / "w" / "stats.safetensors"
    whole.parent.mkdir(parents=True)
    write_stats(whole)
    evals = tmp_path / "results" / "m" / "c" / "x" / "s20" / "eval"
    evals.mkdir()
    (evals / "pruned.json").write_text('{"cut')
    in_progress = tmp_path / "results" / "m" / "c" / "y" / "s20" / ".pruned.tmp-123"
    in_progress.mkdir(parents=True)
    (in_progress / "config.json").write_text("{}")
    found = {path.relative_to(tmp_path).as_posix(): problem for path, problem in damaged_artifacts(tmp_path)}
    assert set(found) == {"results/m/c/x/s20/pruned", "results/m/c/x/s20/eval/pruned.json"}


def test_a_checkpoint_folder_without_its_config_is_damaged(tmp_path):
    folder = tmp_path / "results" / "m" / "c" / "x" / "s20" / "pruned"
    folder.mkdir(parents=True)
    write_stats(folder / "model.safetensors")
    (folder / "tokenizer_config.json").write_text("{}")
    assert [(p.name, why) for p, why in damaged_artifacts(tmp_path)] == [("pruned", "no config.json")]


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, same header: only a hash can tell
    path.write_bytes(bytes(data))


def test_a_tensor_file_that_differs_from_its_recorded_hash_is_damaged(tmp_path):
    path = tmp_path / "results" / "m" / "calib" / "w" / "stats.safetensors"
    write_stats(path)
    assert json.loads(path.with_suffix(".json").read_text())["sha256"]
    assert damaged_artifacts(tmp_path) == [] and load_tensors(path)["b"].sum() == 5
    flip_last_byte(path)
    assert safetensors_problem(path) is None  # structurally whole
    with pytest.raises(DamagedArtifactError, match="sha256 differs from the one stats.json recorded"):
        load_tensors(path)
    assert [(p.name, "sha256" in why) for p, why in damaged_artifacts(tmp_path)] == [("stats.safetensors", True)]


def test_a_checkpoint_file_that_differs_from_its_manifest_is_refused_before_loading(tmp_path, model, tokenizer):
    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import save_checkpoint
    from structprune.model.loading import load_checkpoint
    from structprune.model.sources import ModelSourceError

    folder = tmp_path / "results" / "m" / "c" / "x" / "s20" / "pruned"
    save_checkpoint(model, tokenizer, folder, build_manifest("prune", {}, {}))
    assert set(json.loads((folder / "manifest.json").read_text())["files"]) >= {"config.json", "model.safetensors"}
    load_checkpoint(folder)
    flip_last_byte(folder / "model.safetensors")
    assert checkpoint_problem(folder) is None  # the cheap check passes ...
    with pytest.raises(ModelSourceError, match="model.safetensors: its sha256 differs from the one manifest.json recorded"):
        load_checkpoint(folder)  # ... the stage's does not
    assert [p.name for p, _ in damaged_artifacts(tmp_path)] == ["pruned"]  # edited after its manifest: hashed


def test_identical_writes_give_identical_bytes_and_timing_stays_in_the_sidecar(tmp_path, model, tokenizer):
    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import save_checkpoint

    for run, seconds in (("a", 1.0), ("b", 2.5)):
        save_tensors({"x": torch.ones(3)}, tmp_path / run / "stats.safetensors", {"k": 1}, timing={"wall_time_s": seconds})
        save_checkpoint(model, tokenizer, tmp_path / run / "ckpt", build_manifest("prune", {}, {"sparsity": 0.2}))
    assert (tmp_path / "a/stats.safetensors").read_bytes() == (tmp_path / "b/stats.safetensors").read_bytes()
    assert json.loads((tmp_path / "b/stats.json").read_text())["timing"] == {"wall_time_s": 2.5}
    for name in sorted(p.name for p in (tmp_path / "a/ckpt").iterdir()):
        assert (tmp_path / "a/ckpt" / name).read_bytes() == (tmp_path / "b/ckpt" / name).read_bytes(), name


def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "stats.safetensors"
    stale_file = tmp_path / ".stats.safetensors.tmp-99999.safetensors"
    stale_file.write_bytes(b"half")
    stale_dir = tmp_path / ".ckpt.tmp-99999"
    (stale_dir / "sub").mkdir(parents=True)
    write_stats(target)
    from structprune.io.artifacts import atomic_dir

    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "f").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "stats.json", "stats.safetensors"]


def test_a_tensor_file_whose_hash_record_is_gone_is_damaged_not_unchecked(tmp_path):
    path = tmp_path / "resources" / "data" / "m" / "calib" / "w.safetensors"
    write_stats(path)
    path.with_suffix(".json").unlink()  # before #26 this turned the hash check off for good
    flip_last_byte(path)
    with pytest.raises(DamagedArtifactError, match="its hash record w.json is missing"):
        load_tensors(path)
    assert [(p.name, why) for p, why in damaged_artifacts(tmp_path)] == [("w.safetensors", "its hash record w.json is missing")]


def test_an_edited_evaluation_is_damaged_and_never_reaches_a_table(tmp_path):
    from structprune.io.artifacts import write_stage_json
    from structprune.io.integrity import read_stage_json

    path = tmp_path / "results" / "m" / "c" / "x" / "s20" / "eval" / "pruned.json"
    write_stage_json(path, {"perplexity": {"wikitext2": {"ppl": 68.17}}}, "evaluate")
    assert read_stage_json(path)["perplexity"]["wikitext2"]["ppl"] == 68.17 and damaged_artifacts(tmp_path) == []
    path.write_text(path.read_text().replace("68.17", "58.17"))  # a better number, by hand
    with pytest.raises(DamagedArtifactError, match="its content differs from what its stage wrote"):
        read_stage_json(path)
    assert [p.name for p, _ in damaged_artifacts(tmp_path)] == ["pruned.json"]
    path.write_text(json.dumps({"perplexity": {"wikitext2": {"ppl": 58.17}}}))  # no seal at all
    assert "no content_sha256" in damaged_artifacts(tmp_path)[0][1]


def test_a_dense_stream_file_changed_after_recording_is_refused_and_found(tmp_path, model, tokenizer):
    from structprune.calibration.densestream import CachedDenseStream, record_dense_stream
    from structprune.calibration.streams import capture_layer_inputs

    samples = torch.randint(3, len(tokenizer), (4, 12), generator=torch.Generator().manual_seed(0))
    folder = tmp_path / "results" / "m" / "calib" / "w" / "dense"
    record_dense_stream(model, samples, 2, folder, {"stage": "dense-stream"}, progress=False)
    (folder / ".snakemake_timestamp").write_text("")  # Snakemake touches it after the job: not an edit
    assert damaged_artifacts(tmp_path) == []
    flip_last_byte(folder / "layer_001.safetensors")
    assert [(p.name, "layer_001.safetensors: its sha256 differs" in why) for p, why in damaged_artifacts(tmp_path)] == [("dense", True)]
    stream = CachedDenseStream(folder, capture_layer_inputs(model, samples, 2), len(model.model.layers))
    stream.advance_shared(0, model.model.layers[0], capture_layer_inputs(model, samples, 2))
    with pytest.raises(DamagedArtifactError, match="layer_001.safetensors is damaged: its sha256 differs"):
        stream.taps(1, model.model.layers[1], {("mlp.down_proj", "out")})
    data = (folder / "inputs.safetensors").read_bytes()
    (folder / "inputs.safetensors").write_bytes(data[: len(data) // 2])  # truncated: found without any hashing
    assert any("inputs.safetensors" in why and "truncated" in why for _, why in damaged_artifacts(tmp_path))


def test_the_scan_before_planning_hashes_only_what_changed_since_it_was_written(tmp_path, model, tokenizer, monkeypatch):
    import structprune.io.integrity as integrity
    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import save_checkpoint

    folder = tmp_path / "results" / "m" / "c" / "x" / "s20" / "pruned"
    save_checkpoint(model, tokenizer, folder, build_manifest("prune", {}, {}))
    write_stats(tmp_path / "results" / "m" / "calib" / "w" / "stats.safetensors")
    (folder / ".snakemake_timestamp").write_text("")  # always newer than the manifest
    hashed = []
    monkeypatch.setattr(integrity, "sha256_path", lambda p: hashed.append(p) or "x")
    assert damaged_artifacts(tmp_path) == [] and hashed == []


def test_a_gguf_export_and_task_items_that_differ_from_their_records_are_refused(tmp_path, caplog):
    from structprune.cli import main
    from structprune.io.artifacts import sha256_path, write_stage_json

    gguf = tmp_path / "results" / "m" / "c" / "x" / "s20" / "gguf" / "pruned.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF" + bytes(range(64)))
    write_stage_json(gguf.with_suffix(".json"), {"sha256": sha256_path(gguf), "architecture": "llama"}, "export")
    tasks = tmp_path / "resources" / "data" / "tasks" / "piqa.jsonl"
    tasks.parent.mkdir(parents=True)
    tasks.write_text('{"goal": "a"}\n')
    (tasks.with_suffix(".json")).write_text(json.dumps({"sha256": sha256_path(tasks)}))
    assert damaged_artifacts(tmp_path) == []
    flip_last_byte(gguf)
    tasks.write_text('{"goal": "b"}\n')
    assert sorted(p.name for p, _ in damaged_artifacts(tmp_path)) == ["piqa.jsonl", "pruned.gguf"]
    assert main(["evaluate-gguf", "--gguf", str(gguf), "--out", str(tmp_path / "e.json")]) == 2
    assert "pruned.gguf is damaged: its sha256 differs from the one pruned.json recorded" in caplog.text
