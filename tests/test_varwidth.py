"""Per-layer widths: real smaller layers that load offline with trust_remote_code."""

import json

import torch
from test_plan_prune import masked_copy
from tiny import HEAD_DIM, INTERMEDIATE, TASK_RECORDS
from transformers import AutoModelForCausalLM

from structprune.evaluation.zeroshot import zero_shot
from structprune.io.checkpoint import save_checkpoint
from structprune.model.loading import load_checkpoint
from structprune.pruning.planning import LayerPlan, PrunePlan
from structprune.pruning.slicing import prune_model


def test_different_widths_per_layer_save_load_and_match_the_masked_model(model, tokenizer, input_ids, tmp_path):
    plan = PrunePlan([
        LayerPlan([0, 2, 3, 5], [0, 1], list(range(0, INTERMEDIATE, 2))),  # 4 heads, 32 neurons
        LayerPlan([0, 1, 2, 3, 4, 5], [0, 1], list(range(INTERMEDIATE - 5))),  # unpruned heads, 59 neurons
    ])
    expected = masked_copy(model, plan, HEAD_DIM)(input_ids).logits
    pruned = prune_model(model, plan)
    assert type(pruned).__name__ == "StructpruneLlamaForCausalLM"
    torch.testing.assert_close(pruned(input_ids).logits, expected, atol=1e-5, rtol=1e-5)
    save_checkpoint(pruned, tokenizer, tmp_path / "ckpt", {"stage": "test"})
    assert (tmp_path / "ckpt" / "modeling_structprune.py").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", trust_remote_code=True)
    widths = [(layer.self_attn.q_proj.out_features, layer.mlp.gate_proj.out_features) for layer in loaded.model.layers]
    assert widths == [(4 * HEAD_DIM, 32), (6 * HEAD_DIM, INTERMEDIATE - 5)]
    torch.testing.assert_close(loaded(input_ids).logits, expected, atol=1e-5, rtol=1e-5)
    out = loaded.generate(input_ids[:1, :4], max_new_tokens=3, do_sample=False, pad_token_id=2)
    assert out.shape == (1, 7)
    reloaded, _ = load_checkpoint(tmp_path / "ckpt")  # the pipeline's own loader: our class, not the folder's copy
    assert type(reloaded).__module__ == "structprune.model.varwidth"
    torch.testing.assert_close(reloaded(input_ids).logits, expected, atol=1e-5, rtol=1e-5)
    task_file = tmp_path / "piqa.jsonl"
    task_file.write_text("".join(json.dumps(r) + "\n" for r in TASK_RECORDS["piqa"]))
    assert zero_shot(reloaded, tokenizer, {"piqa": task_file}, limit=2, batch_size=2)[0]["piqa"]["n"] == 2


def test_head_count_that_does_not_divide_hidden_size_uses_the_variable_width_class(tokenizer, input_ids, tmp_path):
    from tiny import tiny_llama

    model = tiny_llama(len(tokenizer), heads=12, kv_heads=4, head_dim=4, hidden=60, intermediate=16)
    plan = PrunePlan([LayerPlan([h for h in range(12) if h % 3], [0, 1, 2, 3], list(range(16)))] * 2)
    expected = masked_copy(model, plan, 4)(input_ids).logits
    pruned = prune_model(model, plan)  # 8 heads: 60 % 8 != 0, which the stock LlamaConfig rejects
    assert type(pruned).__name__ == "StructpruneLlamaForCausalLM"
    save_checkpoint(pruned, tokenizer, tmp_path / "ckpt", {"stage": "test"})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(loaded(input_ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_foreign_code_in_a_checkpoint_or_source_is_refused_before_loading(model, tokenizer, tmp_path):
    import pytest

    from structprune.model.loading import load_source
    from structprune.model.sources import ModelSourceError

    model.save_pretrained(tmp_path / "src")
    tokenizer.save_pretrained(tmp_path / "src")
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "someone/repo--modeling_x.XForCausalLM"}
    (tmp_path / "src" / "config.json").write_text(json.dumps(config))
    for load in (load_checkpoint, lambda p: load_source(str(p))):
        with pytest.raises(ModelSourceError, match="never runs third-party model code"):
            load(tmp_path / "src")
    (tmp_path / "src" / "config.json").write_text("{not json")
    with pytest.raises(ModelSourceError, match="is damaged: config.json: not JSON.*Rerun the workflow"):
        load_checkpoint(tmp_path / "src")
