"""A family other than Llama through the whole workflow (issue #28): a tiny Qwen3 (q/k norms)
is pruned by data-free, calibrated, bias-compensating and recovered methods, evaluated and
reported; its GGUF export, which llama.cpp cannot run yet, is skipped with the reason in the
table's note instead of failing the run."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from tiny import tiny_mirror, tiny_tokenizer
from workflow_helpers import ONE_THREAD, snakemake, tiny_config, write_config

pytestmark = pytest.mark.workflow


def test_a_qwen3_runs_end_to_end_and_its_export_is_skipped_with_the_reason(tmp_path):
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = transformers.Qwen3Config(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=6, num_key_value_heads=2, head_dim=4,
                                      max_position_embeddings=512, tie_word_embeddings=True)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    model.save_pretrained(tmp_path / "qwen-src")
    tokenizer.save_pretrained(tmp_path / "qwen-src")
    tiny_mirror(tmp_path / "mirror")
    cfg = tiny_config(tmp_path)
    cfg["models"] = {"qwen": {"source": str(tmp_path / "qwen-src"), "gguf_tokenizer_pre": "llama-bpe",
                              "mem_mb": 1000, "runtime": 10}}
    cfg["methods"] = {k: v for k, v in cfg["methods"].items() if k in ("l2", "ours", "flap", "wanda-sp")}
    del cfg["heldout"]
    cfg["export"] = {"enabled": True}
    cfg["evaluation"]["speed"] = {"enabled": False}
    (work := tmp_path / "run").mkdir()
    write_config(work, cfg)
    result = snakemake(work, *ONE_THREAD)
    assert "GGUF export skipped for models.qwen: llama.cpp's qwen3 architecture" in result.stderr + result.stdout
    table = (work / "results" / "tables" / "qwen.md").read_text()
    assert "No GGUF export: models.qwen: llama.cpp's qwen3 architecture loads every layer with layer 0's" in table
    for label in ("l2", "Ours (SG)", "Ours (SG) w/ remedy", "flap", "wanda-sp"):
        assert f"| {label} " in table, label
    assert not list((work / "results" / "qwen").rglob("*.gguf"))
    checkpoints = {json.loads(p.read_text())["model_type"] for p in (work / "results" / "qwen").rglob("config.json")}
    assert checkpoints <= {"qwen3", "structprune_qwen3"} and "structprune_qwen3" in checkpoints  # FLAP: per-layer widths
