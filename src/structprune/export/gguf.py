"""Export a checkpoint to a GGUF file that llama.cpp runs (docs/research/gguf-export.md).

Uniform widths are written as llama.cpp's ``llama`` architecture. Per-layer widths (global
allocation such as FLAP's) use ``deci``, which reads per-layer ``attention.head_count``,
``attention.head_count_kv`` and ``feed_forward_length`` arrays and builds each layer at its
own width (llama.cpp ``src/models/deci.cpp``); ``llama`` reads such arrays but rejects
tensors whose width differs from layer 0's. Under grouped-query attention llama.cpp maps
query head h to kv head h // (n_head / n_head_kv), the same contiguous groups as
transformers' ``repeat_kv``, so a checkpoint transformers loads has the right head order.

What llama.cpp cannot represent is refused with the reason, never written wrong: q/k/v or
gate/up biases (llama.cpp declares them at the unpruned width), a layer whose MLP lost every
neuron (``deci`` then also drops the layer's attention output), a first layer without heads
(``deci`` derives the head size from layer 0), a rope scaling other than Llama-3.x's or
linear, untied heads of another width. Llama-3.x's and linear rope scalings only divide each
rotary frequency by a fixed factor: those factors are written as llama.cpp's ``rope_freqs``
tensor, which both architectures apply (the converter does the same for Llama-3.1).
o_proj and down_proj biases (FLAP's compensation) are written as ``attn_output.bias`` and
``ffn_down.bias``, which both architectures add.

q_proj and k_proj rows are permuted per head from transformers' rotate-half layout to the
interleaved pairs ggml's rope rotates (the converter's ``LlamaModel.permute``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from structprune.io.artifacts import atomic_file

log = logging.getLogger(__name__)

TENSOR_TYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32  # Q8_0 quantises rows in blocks of 32 values


class ExportError(ValueError):
    """The checkpoint cannot be represented in llama.cpp; the message says why and what to do."""


@dataclass(frozen=True)
class LayerWidths:
    heads: int
    kv_heads: int
    ffn: int


def layer_widths(model) -> list[LayerWidths]:
    from structprune.model.geometry import decoder_layers, model_head_dim

    head_dim = model_head_dim(model.config)
    return [
        LayerWidths(layer.self_attn.q_proj.out_features // head_dim, layer.self_attn.k_proj.out_features // head_dim,
                    layer.mlp.gate_proj.out_features)
        for layer in decoder_layers(model)
    ]


def export_problems(model, widths: list[LayerWidths]) -> list[str]:
    """Everything that keeps `model` from a faithful llama.cpp file (empty: exportable)."""
    from structprune.model.families import export_problem as family_export_problem
    from structprune.model.geometry import decoder_layers

    problems = []
    if problem := family_export_problem(model.config.to_dict(), "the model"):  # not the Llama block llama.cpp gets
        problems.append(problem)
    elif problem := rope_factors(model)[1]:
        problems.append(problem)
    if getattr(model.config, "residual_channels", None):
        problems.append("its layers read and write their own residual channels (DISP-LLM), which llama.cpp has no "
                        "index select / index add for")
    if widths[0].heads == 0:
        problems.append("layer 0 has no attention heads; llama.cpp's deci derives the head size from layer 0")
    for index, (layer, width) in enumerate(zip(decoder_layers(model), widths, strict=True)):
        if width.ffn == 0:
            problems.append(f"layer {index} has no MLP neurons left; llama.cpp's deci would drop its attention output too")
        if width.kv_heads and width.heads % width.kv_heads:
            problems.append(f"layer {index}: {width.heads} query heads do not split evenly over {width.kv_heads} kv heads")
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"):
            if layer.get_submodule(name).bias is not None:
                problems.append(f"layer {index}: {name} has a bias; llama.cpp declares it at the unpruned width")
    return problems


FREQUENCY_ONLY_ROPE = ("llama3", "linear")  # rope scalings that divide each rotary frequency by a fixed factor


def rope_factors(model) -> tuple[np.ndarray | None, str | None]:
    """llama.cpp's ``rope_freqs`` for the model's rope scaling: each rotary frequency's divisor,
    read off the model's own rotary table (the unscaled frequencies over the scaled ones), so
    the file computes what transformers does. (None, None) without scaling; (None, why) for a
    scaling that also rescales attention or depends on the sequence length (YaRN, dynamic NTK,
    LongRoPE), which this way cannot express."""
    rotary = model.model.rotary_emb
    kind = getattr(rotary, "rope_type", "default")
    if kind == "default":
        return None, None
    if kind not in FREQUENCY_ONLY_ROPE or float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
        return None, (f"rope scaling {kind!r} is not exported (only {', '.join(FREQUENCY_ONLY_ROPE)}: those only "
                      "divide each rotary frequency by a fixed factor)")
    unscaled, _ = rotary.compute_default_rope_parameters(model.config)
    return (unscaled.double() / rotary.inv_freq.double().cpu()).float().numpy(), None


def rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of q_proj / k_proj (or a bias) from transformers' rotate-half order to ggml's
    interleaved pairs, head by head: [0, d/2, 1, d/2 + 1, ...] within each head."""
    if heads == 0:
        return weight
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tensor_data(array: np.ndarray, tensor_type: str):
    """(data, raw_dtype or None) for a 2-D weight in `tensor_type`; Q8_0 falls back to f16 when
    the row length is not a multiple of 32 (as llama.cpp's converter does)."""
    import gguf

    if tensor_type == "f32":
        return array.astype(np.float32), None
    if tensor_type == "q8_0" and array.shape[-1] % Q8_BLOCK == 0:
        return gguf.quants.quantize(array.astype(np.float32), gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return array.astype(np.float16), None


def _add_tokenizer_from_gguf(writer, source_gguf: str) -> None:
    """Copy every ``tokenizer.*`` field of the model's source GGUF file verbatim (pruning leaves
    the tokenizer alone; this keeps the pre-tokenizer and token types exactly as shipped)."""
    import gguf

    reader = gguf.GGUFReader(source_gguf)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, field.types[0])


def _add_tokenizer_from_hf(writer, tokenizer, pre: str) -> None:
    """A BPE (``gpt2``) vocabulary from a transformers tokenizer: tokens by id, special tokens as
    CONTROL, other added tokens as USER_DEFINED, merges from tokenizer.json, special ids and
    the chat template. `pre` names llama.cpp's pre-tokenizer (``default`` for plain byte-level)."""
    import gguf

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state.get("model", {}).get("type") != "BPE":
        raise ExportError(f"only byte-level BPE tokenizers are exported, not {state.get('model', {}).get('type')!r}")
    vocab_size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = {token.content: token.special for token in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added.get(token) else
                         gguf.TokenType.USER_DEFINED if token in added else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for name, setter in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                         ("pad_token_id", writer.add_pad_token_id), ("unk_token_id", writer.add_unk_token_id)):
        value = getattr(tokenizer, name, None)
        if value is not None:
            setter(int(value))
    writer.add_add_bos_token(False)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def export_gguf(model, tokenizer, out: str | Path, tensor_type: str = "f16", source_gguf: str | None = None,
                tokenizer_pre: str | None = None, name: str = "structprune", architecture: str | None = None) -> dict:
    """Write `model` (a Llama-family causal LM, possibly with per-layer widths) to `out`.

    The tokenizer comes from `source_gguf` (copied) when the model was loaded from a GGUF
    file, else from `tokenizer` with llama.cpp pre-tokenizer `tokenizer_pre`. `architecture`
    forces ``deci`` for uniform widths too (to time its overhead); by default uniform widths
    are ``llama``. Returns a summary (architecture, widths, tensor type)."""
    import gguf

    if tensor_type not in TENSOR_TYPES:
        raise ExportError(f"tensor type {tensor_type!r} is not one of {TENSOR_TYPES}")
    if source_gguf is None and tokenizer_pre is None:
        raise ExportError("the tokenizer needs llama.cpp's pre-tokenizer name: pass the model's source GGUF file "
                          "(its tokenizer is copied) or a tokenizer_pre (for example 'smollm', 'llama-bpe', 'default')")
    widths = layer_widths(model)
    uniform = len(set(widths)) == 1
    if architecture not in (None, "llama", "deci") or (architecture == "llama" and not uniform):
        raise ExportError(f"architecture {architecture!r}: llama (uniform widths only) or deci")
    problems = export_problems(model, widths)
    if problems:
        raise ExportError("llama.cpp cannot run this checkpoint as it is: " + "; ".join(problems))
    arch = architecture or ("llama" if uniform else "deci")
    with atomic_file(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        _add_metadata(writer, model.config, widths, arch == "llama", tensor_type, name)
        if source_gguf is not None:
            _add_tokenizer_from_gguf(writer, source_gguf)
        else:
            _add_tokenizer_from_hf(writer, tokenizer, tokenizer_pre)
        _add_tensors(writer, model, widths, tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return {"architecture": arch, "tensor_type": tensor_type, "layers": [w.__dict__ for w in widths],
            "bytes": Path(out).stat().st_size}


def _add_metadata(writer, config, widths: list[LayerWidths], scalar_widths: bool, tensor_type: str, name: str) -> None:
    """Hyperparameters: widths as scalars (`llama`) or per-layer arrays (`deci`)."""
    import gguf

    from structprune.model.geometry import model_head_dim

    head_dim = model_head_dim(config)
    writer.add_name(name)
    writer.add_block_count(len(widths))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    if scalar_widths:
        writer.add_feed_forward_length(widths[0].ffn)
        writer.add_head_count(widths[0].heads)
        writer.add_head_count_kv(widths[0].kv_heads)
    else:
        writer.add_feed_forward_length([w.ffn for w in widths])
        writer.add_head_count([w.heads for w in widths])
        writer.add_head_count_kv([w.kv_heads for w in widths])
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[tensor_type])


def _add_tensors(writer, model, widths: list[LayerWidths], tensor_type: str) -> None:
    """Embeddings, norms and every layer's weights (q/k rows rope-permuted), in llama.cpp's names."""
    from structprune.model.geometry import decoder_layers

    config = model.config

    def weight(name: str, tensor: torch.Tensor) -> None:
        data, raw = _tensor_data(tensor.detach().float().cpu().numpy(), tensor_type)
        writer.add_tensor(name, data, raw_dtype=raw)

    def vector(name: str, tensor: torch.Tensor) -> None:  # norms and biases stay float32
        writer.add_tensor(name, tensor.detach().float().cpu().numpy())

    weight("token_embd.weight", model.get_input_embeddings().weight)
    if (factors := rope_factors(model)[0]) is not None:
        writer.add_tensor("rope_freqs.weight", factors)
    vector("output_norm.weight", model.model.norm.weight)
    if not config.tie_word_embeddings:
        weight("output.weight", model.get_output_embeddings().weight)
    for index, (layer, width) in enumerate(zip(decoder_layers(model), widths, strict=True)):
        attn, mlp, prefix = layer.self_attn, layer.mlp, f"blk.{index}"
        if width.heads:
            vector(f"{prefix}.attn_norm.weight", layer.input_layernorm.weight)
            q = rope_permute(attn.q_proj.weight.detach().float().numpy(), width.heads)
            k = rope_permute(attn.k_proj.weight.detach().float().numpy(), width.kv_heads)
            weight(f"{prefix}.attn_q.weight", torch.from_numpy(q))
            weight(f"{prefix}.attn_k.weight", torch.from_numpy(k))
            weight(f"{prefix}.attn_v.weight", attn.v_proj.weight)
            weight(f"{prefix}.attn_output.weight", attn.o_proj.weight)
            if attn.o_proj.bias is not None:
                vector(f"{prefix}.attn_output.bias", attn.o_proj.bias)
        vector(f"{prefix}.ffn_norm.weight", layer.post_attention_layernorm.weight)
        weight(f"{prefix}.ffn_gate.weight", mlp.gate_proj.weight)
        weight(f"{prefix}.ffn_up.weight", mlp.up_proj.weight)
        weight(f"{prefix}.ffn_down.weight", mlp.down_proj.weight)
        if mlp.down_proj.bias is not None:
            vector(f"{prefix}.ffn_down.bias", mlp.down_proj.bias)
