"""Damaged artifacts are recognised (truncated safetensors, unparsable JSON), named by the
stage that reads them, and named by the workflow with the command that rebuilds them."""

from __future__ import annotations

import json

import pytest
import torch

from structprune.checkpoint import DamagedArtifactError, load_tensors, save_tensors
from structprune.integrity import checkpoint_problem, damaged_artifacts, safetensors_problem


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
