"""GGUF export: metadata and refusals (always), and llama.cpp's logits against transformers'
on tiny checkpoints of every shape pruning produces (needs llama-cpp-python: `make llama-cpp`;
CI sets STRUCTPRUNE_REQUIRE_LLAMA_CPP=1 so that a missing build fails instead of skipping)."""

import copy
import json
import os

import numpy as np
import pytest
import torch
import transformers
from tiny import INTERMEDIATE, tiny_llama, tiny_tokenizer

from structprune.export.gguf import ExportError, export_gguf, export_problems, layer_widths, rope_permute
from structprune.pruning.planning import LayerPlan, PrunePlan
from structprune.pruning.slicing import add_output_bias, prune_model


@pytest.fixture(scope="module")
def bpe_tokenizer():
    return tiny_tokenizer(vocab_size=300)  # with merges: llama.cpp's BPE vocabulary needs them


def fields(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {key: field.contents() for key, field in reader.fields.items()}, {t.name: t for t in reader.tensors}


def pruned_models(vocab: int) -> dict:
    """Every width pattern pruning produces, on the tiny GQA model (6 query heads in 2 kv groups)."""
    dense = tiny_llama(vocab, layers=3)
    full = list(range(INTERMEDIATE))
    uniform = PrunePlan([LayerPlan([0, 1, 3, 4], [0, 1], full[::2])] * 3)  # one query head per group
    per_layer = PrunePlan([
        LayerPlan([0, 1, 2], [0], full[:40]),  # a whole kv group removed
        LayerPlan([0, 2, 3, 5], [0, 1], full[10:]),  # query heads removed inside groups
        LayerPlan(list(range(6)), [0, 1], full),  # dense layer
    ])
    biased = prune_model(copy.deepcopy(dense), per_layer)
    for layer in biased.model.layers:  # FLAP's compensation biases
        g = torch.Generator().manual_seed(3)
        layer.self_attn.o_proj = add_output_bias(layer.self_attn.o_proj, torch.randn(layer.self_attn.o_proj.out_features, generator=g))
        layer.mlp.down_proj = add_output_bias(layer.mlp.down_proj, torch.randn(layer.mlp.down_proj.out_features, generator=g))
    mistral = transformers.MistralForCausalLM(transformers.MistralConfig(**{
        **dense.config.to_dict(), "model_type": "mistral", "sliding_window": None}))  # no window: the Llama block
    mistral.load_state_dict(dense.state_dict())
    llama3 = tiny_llama(vocab, layers=3, seed=2)  # Llama-3.1's rope scaling: both frequencies of head_dim 4 rescaled
    llama3.config.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    llama3.model.rotary_emb = type(llama3.model.rotary_emb)(llama3.config)
    from structprune.pruning.depth import remove_blocks

    return {
        "dense": dense,
        "depth": remove_blocks(tiny_llama(vocab, layers=3, seed=4), [1]),  # ShortGPT / SLEB: a block deleted
        "mixed": prune_model(remove_blocks(tiny_llama(vocab, layers=4, seed=6), [2]), per_layer),  # depth_share: both
        "no_attention": prune_model(tiny_llama(vocab, layers=3, seed=5), PrunePlan([  # BlockPruner: an attention removed
            LayerPlan(list(range(6)), [0, 1], full), LayerPlan([], [], full), LayerPlan(list(range(6)), [0, 1], full)])),
        "llama3_uniform": prune_model(copy.deepcopy(llama3), uniform),
        "llama3_per_layer": prune_model(llama3, per_layer),
        "mistral_per_layer": prune_model(mistral.eval(), per_layer),
        "uniform": prune_model(copy.deepcopy(dense), uniform),
        "per_layer": prune_model(copy.deepcopy(dense), per_layer),
        "per_layer_biased": biased,
        "untied": tiny_llama(vocab, layers=2, tie=False, seed=1),
    }


def test_rope_permute_interleaves_each_heads_halves():
    rows = np.arange(8).reshape(8, 1)  # two heads of head_dim 4: rows [0 1 2 3] [4 5 6 7]
    assert rope_permute(rows, heads=2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_uniform_widths_are_llama_and_per_layer_widths_are_deci(bpe_tokenizer, tmp_path):
    models = pruned_models(len(bpe_tokenizer))
    info = export_gguf(models["uniform"], bpe_tokenizer, tmp_path / "u.gguf", "f32", tokenizer_pre="default")
    meta, _ = fields(tmp_path / "u.gguf")
    assert info["architecture"] == meta["general.architecture"] == "llama"
    assert (meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"], meta["llama.feed_forward_length"]) == (4, 2, 32)
    assert meta["llama.attention.key_length"] == meta["llama.rope.dimension_count"] == 4
    info = export_gguf(models["per_layer_biased"], bpe_tokenizer, tmp_path / "d.gguf", "f16", tokenizer_pre="default")
    meta, tensors = fields(tmp_path / "d.gguf")
    assert info["architecture"] == "deci"
    assert meta["deci.attention.head_count"] == [3, 4, 6]
    assert meta["deci.attention.head_count_kv"] == [1, 2, 2]
    assert meta["deci.feed_forward_length"] == [40, INTERMEDIATE - 10, INTERMEDIATE]
    assert "blk.1.attn_output.bias" in tensors and "blk.2.ffn_down.bias" in tensors
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"
    assert tensors["blk.0.attn_output.bias"].tensor_type.name == "F32"
    assert len(meta["tokenizer.ggml.merges"]) > 0 and meta["tokenizer.ggml.pre"] == "default"


def test_q8_0_quantises_rows_of_32_and_keeps_other_rows_in_f16(bpe_tokenizer, tmp_path):
    model = pruned_models(len(bpe_tokenizer))["per_layer"]
    export_gguf(model, bpe_tokenizer, tmp_path / "q.gguf", "q8_0", tokenizer_pre="default")
    _, tensors = fields(tmp_path / "q.gguf")
    assert tensors["blk.0.ffn_gate.weight"].tensor_type.name == "F16"  # rows of 48 inputs: not a multiple of 32
    assert tensors["blk.0.ffn_down.weight"].tensor_type.name == "F16"  # rows of 40 inputs
    assert tensors["blk.2.ffn_down.weight"].tensor_type.name == "Q8_0"  # rows of 64 inputs


def test_what_llama_cpp_cannot_run_is_refused_with_the_reason(bpe_tokenizer, tmp_path):
    model = tiny_llama(len(bpe_tokenizer))
    q = model.model.layers[0].self_attn.q_proj
    model.model.layers[0].self_attn.q_proj = add_output_bias(q, torch.zeros(q.out_features))
    assert any("q_proj has a bias" in p for p in export_problems(model, layer_widths(model)))
    with pytest.raises(ExportError, match="q_proj has a bias"):
        export_gguf(model, bpe_tokenizer, tmp_path / "x.gguf", tokenizer_pre="default")
    assert not (tmp_path / "x.gguf").exists()
    with pytest.raises(ExportError, match="pre-tokenizer"):
        export_gguf(tiny_llama(len(bpe_tokenizer)), bpe_tokenizer, tmp_path / "y.gguf")
    empty_mlp = tiny_llama(len(bpe_tokenizer))  # our plans keep a neuron per layer; a foreign checkpoint may not
    mlp = empty_mlp.model.layers[1].mlp
    mlp.gate_proj, mlp.up_proj, mlp.down_proj = torch.nn.Linear(48, 0), torch.nn.Linear(48, 0), torch.nn.Linear(0, 48)
    assert any("layer 1 has no MLP neurons" in p for p in export_problems(empty_mlp, layer_widths(empty_mlp)))


def needs_llama_cpp():
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("STRUCTPRUNE_REQUIRE_LLAMA_CPP"):
            pytest.fail("STRUCTPRUNE_REQUIRE_LLAMA_CPP is set but llama-cpp-python is missing: run `make llama-cpp`")
        pytest.skip("llama-cpp-python is not installed (`make llama-cpp`)")


def test_llama3_rope_scaling_is_written_as_the_frequency_divisors_of_the_models_own_table(bpe_tokenizer, tmp_path):
    model = pruned_models(len(bpe_tokenizer))["llama3_uniform"]
    export_gguf(model, bpe_tokenizer, tmp_path / "r.gguf", "f32", tokenizer_pre="default")
    _, tensors = fields(tmp_path / "r.gguf")
    # head_dim 4: frequencies 1 and 1/100 (wavelengths 6.3 and 628 against the original 16 positions):
    # the first between the bands, smoothed; the second beyond the low band, divided by the factor 8
    smooth = (16 / (2 * np.pi) - 1) / (4 - 1)
    expected = [1 / ((1 - smooth) / 8 + smooth), 8.0]
    np.testing.assert_allclose(np.asarray(tensors["rope_freqs.weight"].data), expected, rtol=1e-6)
    yarn = pruned_models(len(bpe_tokenizer))["dense"]
    yarn.config.rope_parameters = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                   "original_max_position_embeddings": 16}
    yarn.model.rotary_emb = type(yarn.model.rotary_emb)(yarn.config)
    with pytest.raises(ExportError, match=r"rope scaling \(?'yarn'"):
        export_gguf(yarn, bpe_tokenizer, tmp_path / "y.gguf", tokenizer_pre="default")


@pytest.mark.parametrize("name", ["dense", "uniform", "per_layer", "per_layer_biased", "untied", "mistral_per_layer",
                                  "llama3_uniform", "llama3_per_layer", "depth", "mixed", "no_attention"])
def test_llama_cpp_logits_match_transformers(bpe_tokenizer, tmp_path, name):
    """f32 export and f32 key/value cache, next-token logits at every position of three token
    lists: llama.cpp against transformers, to 1e-4 absolute (logits are O(1) here; ggml sums in
    another order)."""
    needs_llama_cpp()
    from structprune.export.llamacpp import load, next_token_logits

    model = pruned_models(len(bpe_tokenizer))[name]
    path = tmp_path / f"{name}.gguf"
    export_gguf(model, bpe_tokenizer, path, "f32", tokenizer_pre="default")
    llm = load(path, n_ctx=64, threads=1, logits_all=True, f32_cache=True)
    g = torch.Generator().manual_seed(0)
    for length in (1, 9, 40):
        ids = torch.randint(3, len(bpe_tokenizer), (length,), generator=g)
        with torch.no_grad():
            reference = model(ids[None]).logits[0].numpy()
        ours = next_token_logits(llm, ids.tolist())
        assert np.abs(ours - reference).max() < 1e-4, (name, length, float(np.abs(ours - reference).max()))


def test_export_evaluate_and_time_from_the_command_line(bpe_tokenizer, tmp_path):
    """The stages the workflow runs: export (the file is loaded and generates in llama.cpp),
    evaluate-gguf (our perplexity protocol in llama.cpp, equal to transformers' on an f32
    export), and speed with --gguf (llama.cpp figures, ratios to the dense export of the job)."""
    needs_llama_cpp()
    from structprune.cli import main
    from structprune.evaluation.perplexity import perplexity
    from structprune.io.artifacts import build_manifest
    from structprune.io.checkpoint import save_checkpoint, save_tensors

    models = pruned_models(len(bpe_tokenizer))
    for name in ("dense", "per_layer"):
        save_checkpoint(models[name], bpe_tokenizer, tmp_path / name, build_manifest("prune", {}, {}))
        assert main(["--threads", "1", "export", "--model", str(tmp_path / name), "--out", str(tmp_path / f"{name}.gguf"),
                     "--out-json", str(tmp_path / f"{name}.json"), "--type", "f32", "--tokenizer-pre", "default",
                     "--prompt", "The quick brown fox", "--new-tokens", "4"]) == 0
    info = json.loads((tmp_path / "per_layer.json").read_text())
    assert info["architecture"] == "deci" and info["greedy_tokens_agree"] and info["checkpoint"] == str(tmp_path / "per_layer")

    stream = torch.randint(3, len(bpe_tokenizer), (200,), generator=torch.Generator().manual_seed(5))
    save_tensors({"input_ids": stream}, tmp_path / "stream.safetensors", {})
    out = tmp_path / "gguf-eval.json"
    assert main(["--threads", "1", "evaluate-gguf", "--gguf", str(tmp_path / "per_layer.gguf"), "--ppl",
                 f"wikitext2={tmp_path / 'stream.safetensors'}", "--seq-len", "32", "--out", str(out)]) == 0
    ours = json.loads(out.read_text())["perplexity"]["wikitext2"]
    reference = perplexity(models["per_layer"], stream, 32, progress=False)
    assert ours["windows"] == reference["windows"] == 6 and ours["tokens_scored"] == reference["tokens_scored"]
    assert ours["ppl"] == pytest.approx(reference["ppl"], rel=1e-3)  # llama.cpp's f16 key/value cache
    spread = tmp_path / "gguf-eval-spread.json"  # 3 of the 6 windows, evenly spaced: windows 0, 3 and 5 in both
    assert main(["--threads", "1", "evaluate-gguf", "--gguf", str(tmp_path / "per_layer.gguf"), "--ppl",
                 f"wikitext2={tmp_path / 'stream.safetensors'}", "--seq-len", "32", "--max-tokens", "96",
                 "--windows", "spread", "--out", str(spread)]) == 0
    spread = json.loads(spread.read_text())
    assert spread["protocol"] == {"seq_len": 32, "max_tokens": 96, "windows": "spread"}
    picked = [reference["window_nll"][i] for i in (0, 3, 5)]
    assert spread["perplexity"]["wikitext2"]["window_nll"] == pytest.approx(picked, rel=1e-3)

    speed = tmp_path / "speed.json"
    assert main(["--threads", "1", "speed", "--model", str(tmp_path / "per_layer"), "--dense", str(tmp_path / "dense"),
                 "--repeats", "1", "--new-tokens", "2", "--prefill", "1", "8", "--decode-batches", "1",
                 "--gguf", str(tmp_path / "per_layer.gguf"), "--dense-gguf", str(tmp_path / "dense.gguf"),
                 "--llamacpp-new-tokens", "4", "--llamacpp-repeats", "2", "--out", str(speed)]) == 0
    written = json.loads(speed.read_text())
    cpp = written["llamacpp"]
    assert set(cpp["timing"]) == {"dense", "checkpoint"}
    for key, ratio in cpp["ratio_to_dense"].items():
        paired = [a / b for a, b in zip(cpp["timing"]["checkpoint"]["repeats"][key], cpp["timing"]["dense"]["repeats"][key])]
        entry = cpp["ratio_intervals"][key]
        assert entry["per_repeat"] == pytest.approx(paired, rel=1e-12) and ratio == entry["median"] > 0
        assert entry["n"] == 2 and entry["bound"] > 1 and isinstance(entry["fault"], bool)
    # an f32 export's tensors cost what the checkpoint's parameters do (the bounds agree across the two runtimes)
    assert cpp["cost"]["checkpoint"] == written["timing"]["checkpoint"]["cost"]
    assert cpp["cost"]["dense"] == written["timing"]["dense"]["cost"]


def test_the_exporter_itself_refuses_a_family_llama_cpp_would_run_as_another(bpe_tokenizer, tmp_path):
    """Called as a library (not through the export stage), a Granite is still refused: written as
    llama it would lose its multipliers."""
    config = transformers.GraniteConfig(vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        residual_multiplier=0.5, pad_token_id=0)
    with pytest.raises(ExportError, match="granite architecture"):
        export_gguf(transformers.GraniteForCausalLM(config), bpe_tokenizer, tmp_path / "g.gguf", tokenizer_pre="default")
    assert not (tmp_path / "g.gguf").exists()
