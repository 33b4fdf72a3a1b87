"""Families structprune does not compute correctly yet are refused before any job, with the
reason (issue #28's first rule: never a silently wrong checkpoint). Tiny random models of each
family, built in code."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers
from tiny import tiny_tokenizer
from workflow_helpers import snakemake, tiny_config, write_config

from structprune.cli import main
from structprune.model.families import family_problem
from structprune.spec.configcheck import validate_config
from structprune.spec.modelcheck import export_skips, model_family_problems

SMALL = dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {  # model_type: config class and what it adds to the Llama block
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
    assert f"model family {model_type!r}" in caplog.text and "is not supported yet: " in caplog.text
    assert "Supported families: Llama, Mistral, Qwen2/2.5, Qwen3, Gemma, Gemma 2, Gemma 3, Granite, SmolLM3" in caplog.text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config_class", [transformers.MistralConfig, transformers.Qwen2Config, transformers.Qwen3Config,
                                          transformers.GemmaConfig, transformers.Gemma2Config, transformers.Gemma3TextConfig,
                                          transformers.GraniteConfig, transformers.SmolLM3Config])
def test_the_model_stage_builds_a_supported_family_in_its_own_class(tmp_path, config_class):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**SMALL, pad_token_id=0))
    model.save_pretrained(tmp_path / "src")
    tiny_tokenizer().save_pretrained(tmp_path / "src")
    assert main(["model", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    built = json.loads((tmp_path / "out" / "config.json").read_text())
    assert built["model_type"] == model.config.model_type and built["architectures"] == [type(model).__name__]


def test_a_llama_with_biases_is_refused_and_a_plain_llama_accepted(tmp_path):
    assert "attention_bias" in family_problem({"model_type": "llama", "attention_bias": True}, "m")
    assert family_problem({"model_type": "llama", "attention_bias": False, "mlp_bias": False}, "m") is None
    for ours in ("structprune_llama", "structprune_mistral", "structprune_qwen2", "structprune_qwen3",
                 "structprune_gemma", "structprune_gemma2", "structprune_gemma3_text", "structprune_granite",
                 "structprune_smollm3"):
        assert family_problem({"model_type": ours}, "m") is None  # a variable-width checkpoint pruned again
    assert "not supported: " in family_problem({"model_type": "mamba"}, "m")


def test_planning_refuses_a_local_source_of_another_family_before_any_job(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["models"]["tiny"]["source"] = str(save_family(tmp_path / "olmo", "olmo2"))
    validate_config(cfg)
    assert any("models.tiny: model family 'olmo2' (OLMo2)" in p for p in model_family_problems(cfg, tmp_path))
    (work := tmp_path / "work").mkdir()
    write_config(work, cfg)
    result = snakemake(work, "--dry-run", check=False)
    assert result.returncode != 0 and "model family 'olmo2'" in result.stdout + result.stderr


def test_planning_names_a_local_source_that_is_not_there_before_any_job(tmp_path):
    cfg = tiny_config(tmp_path)
    validate_config(cfg)
    cfg["models"]["tiny"]["source"] = str(tmp_path / "no-such-folder")
    assert model_family_problems(cfg, tmp_path) == [
        f"  models.tiny.source: model source {str(tmp_path / 'no-such-folder')!r}: local path does not exist"]
    cfg["models"]["tiny"]["source"] = "gguf:missing.gguf"
    assert "GGUF file missing.gguf does not exist" in model_family_problems(cfg, tmp_path)[0]
    cfg["models"]["tiny"]["source"] = "HuggingFaceTB/SmolLM2-135M"  # a Hub id: the model stage checks it
    assert model_family_problems(cfg, tmp_path) == []


def test_a_built_llama_with_yarn_rope_scaling_skips_its_export_at_planning_with_the_reason(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["models"]["tiny"]["gguf_tokenizer_pre"] = "llama-bpe"
    cfg["export"] = {"enabled": True}
    validate_config(cfg)
    built = tmp_path / "resources" / "models" / "tiny"
    built.mkdir(parents=True)
    config = {"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 8.0}}
    (built / "config.json").write_text(json.dumps(config))
    assert model_family_problems(cfg, tmp_path) == []  # the model itself prunes fine
    skips = export_skips(cfg, tmp_path)
    assert list(skips) == ["tiny"] and "rope scaling ('yarn')" in skips["tiny"]
    config["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0}  # Llama-3.1/3.2: written as rope_freqs
    (built / "config.json").write_text(json.dumps(config))
    assert export_skips(cfg, tmp_path) == {}
    cfg["export"]["enabled"] = False
    assert export_skips(cfg, tmp_path) == {}


def test_planning_refuses_the_residual_refit_target_on_sandwich_norms_naming_the_methods(tmp_path):
    cfg = tiny_config(tmp_path)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.Gemma2Config(**SMALL, head_dim=8))
    model.save_pretrained(tmp_path / "gemma")
    cfg["models"]["tiny"]["source"] = str(tmp_path / "gemma")
    validate_config(cfg)
    problems = model_family_problems(cfg, tmp_path)
    assert len(problems) == 1 and "Gemma 2: its post-attention and post-MLP norms divide" in problems[0]
    assert "(methods ['best'])" in problems[0]  # a grid with refit toward the block; ours' paper recovery runs
    cfg["recover"]["target"] = "module"  # the dense projection outputs: linear, so exact
    assert model_family_problems(cfg, tmp_path) == []


def test_a_gguf_source_is_judged_by_its_llama_cpp_architecture_at_planning(tmp_path):
    import gguf

    def gguf_file(arch):
        writer = gguf.GGUFWriter(str(tmp_path / f"{arch}.gguf"), arch)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.close()
        return f"gguf:{tmp_path / f'{arch}.gguf'}"

    cfg = tiny_config(tmp_path)
    validate_config(cfg)
    cfg["models"]["tiny"]["source"] = gguf_file("olmo2")
    assert model_family_problems(cfg, tmp_path) == [
        "  models.tiny: GGUF architecture 'olmo2' is not supported as a source (GGUF sources: llama, gemma3); "
        "supported families: Llama, Mistral, Qwen2/2.5, Qwen3, Gemma, Gemma 2, Gemma 3, Granite, SmolLM3"]
    cfg["models"]["tiny"]["source"] = gguf_file("gemma3")  # loads as Gemma 3: no refit toward the residual stream
    problems = model_family_problems(cfg, tmp_path)
    assert len(problems) == 1 and "Gemma 3: its post-attention and post-MLP norms divide" in problems[0]
    cfg["models"]["tiny"]["source"] = gguf_file("llama")
    assert model_family_problems(cfg, tmp_path) == []
