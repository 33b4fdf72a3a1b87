"""Decoder layers of different widths in the model's own family, loadable offline with
`trust_remote_code`.

A checkpoint whose layers keep different numbers of heads or neurons (global structures
such as FLAP's, LLM-Pruner's unpruned first/last layers), or whose head count no longer
divides ``hidden_size`` (which the stock ``LlamaConfig`` rejects), or whose o_proj /
down_proj carry a bias (FLAP's compensation; ``output_bias``), is saved with this file as
``modeling_structprune.py`` and an ``auto_map`` in its config, so that
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` builds it.

Each class is the family's own (a subclass of ``LlamaForCausalLM``, ``Qwen3ForCausalLM`` ...):
the model is built from the source's widths, then each layer's projections are replaced by
ones of that layer's width (``layer_widths``: heads, kv heads, MLP neurons per layer). Every
family here reshapes attention with ``-1`` heads, so the forward is the family's own: the
same norms, biases, q/k norms, sliding windows and rotary scaling as the source model.
A DISP-LLM checkpoint also lists each layer's residual channels (``residual_channels``): its
attention and MLP read only those of the normed stream and add their output back at those of
the residual stream, which keeps its full width.
This file must import nothing from structprune: it travels inside checkpoints.
"""

import types

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GraniteConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
    SmolLM3Config,
)
from transformers.models.gemma.modeling_gemma import GemmaForCausalLM
from transformers.models.gemma2.modeling_gemma2 import Gemma2ForCausalLM
from transformers.models.gemma3.modeling_gemma3 import Gemma3ForCausalLM
from transformers.models.granite.modeling_granite import GraniteForCausalLM
from transformers.models.llama.modeling_llama import LlamaForCausalLM
from transformers.models.mistral.modeling_mistral import MistralForCausalLM
from transformers.models.qwen2.modeling_qwen2 import Qwen2ForCausalLM
from transformers.models.qwen3.modeling_qwen3 import Qwen3ForCausalLM
from transformers.models.smollm3.modeling_smollm3 import SmolLM3ForCausalLM

MODULE_NAME = "modeling_structprune"


def _attention_output_only(self, hidden_states, *args, **kwargs):
    """The forward of an attention whose every head was removed (BlockPruner's unit, or a
    plan keeping no head): it adds o_proj's bias (FLAP's compensation) or nothing."""
    return self.o_proj(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), None


def skip_attention(attn: nn.Module) -> None:
    """Make an attention module with no heads left compute its output without attending (the
    family's own forward cannot reshape zero heads)."""
    attn.forward = types.MethodType(_attention_output_only, attn)


def _channel_index(module: nn.Module, key: str, device) -> torch.Tensor:
    """The module's residual channel list `key` as an index tensor on `device`, built once per
    device (plain lists in the config: nothing to load, nothing left at a default)."""
    cache = module.__dict__.setdefault("_channel_index_cache", {})
    if (key, device) not in cache:
        cache[(key, device)] = torch.tensor(getattr(module, key), dtype=torch.long, device=device)
    return cache[(key, device)]


def map_sublayer_input(args, kwargs, change):
    """A forward pre-hook's (args, kwargs) with the sublayer's hidden states replaced by
    change(hidden states): positional, or the keyword the family passes (attention: hidden_states,
    MLP: x)."""
    if args:
        return (change(args[0]), *args[1:]), kwargs
    key = "hidden_states" if "hidden_states" in kwargs else "x"
    kwargs[key] = change(kwargs[key])
    return args, kwargs


def map_sublayer_output(output, change):
    """A sublayer's output with its hidden states replaced by change(hidden states) (attention
    returns a tuple, the MLP a tensor)."""
    return (change(output[0]), *output[1:]) if isinstance(output, tuple) else change(output)


def _read_selected_channels(module, args, kwargs):
    """DISP-LLM's input selection: the sublayer reads only its channels of the normed residual
    stream (the norm itself stays full width, as the reference's pruned model computes it)."""
    return map_sublayer_input(args, kwargs, lambda hidden: hidden.index_select(
        -1, _channel_index(module, "input_channels", hidden.device)))


def _write_selected_channels(module, args, kwargs, output):
    """DISP-LLM's index add: the sublayer's output lands on its channels of the residual stream,
    zeros elsewhere (so post-norms and multipliers see what the zeroed full model gives them)."""
    def scatter(hidden):
        index = _channel_index(module, "output_channels", hidden.device)
        return hidden.new_zeros(*hidden.shape[:-1], module.residual_width).index_add_(-1, index, hidden)
    return map_sublayer_output(output, scatter)


def select_residual_channels(module: nn.Module, read: list, write: list, width: int) -> None:
    """Make `module` (an attention or an MLP) read and write only these residual channels."""
    module.input_channels, module.output_channels, module.residual_width = list(read), list(write), width
    module.register_forward_pre_hook(_read_selected_channels, with_kwargs=True)
    module.register_forward_hook(_write_selected_channels, with_kwargs=True)


def resize_layers(model: nn.Module, config) -> None:
    """Give every decoder layer the projections of its own width (weights are loaded next), and
    with `residual_channels` its own residual channels in and out (DISP-LLM)."""
    if not config.layer_widths:
        return
    head_dim = config.head_dim
    channels = config.residual_channels or [None] * len(config.layer_widths)
    for layer, (heads, kv_heads, neurons), selected in zip(model.model.layers, config.layer_widths, channels, strict=True):
        attn, mlp = layer.self_attn, layer.mlp
        hidden = attn.q_proj.in_features
        attn_in, attn_out, mlp_in, mlp_out = (len(c) for c in selected) if selected else (hidden,) * 4
        shapes = {
            (attn, "q_proj"): (attn_in, heads * head_dim), (attn, "k_proj"): (attn_in, kv_heads * head_dim),
            (attn, "v_proj"): (attn_in, kv_heads * head_dim), (attn, "o_proj"): (heads * head_dim, attn_out),
            (mlp, "gate_proj"): (mlp_in, neurons), (mlp, "up_proj"): (mlp_in, neurons), (mlp, "down_proj"): (neurons, mlp_out),
        }
        for (parent, name), (n_in, n_out) in shapes.items():
            old = getattr(parent, name)
            bias = old.bias is not None or (config.output_bias and name in ("o_proj", "down_proj"))
            setattr(parent, name, nn.Linear(n_in, n_out, bias=bias, dtype=old.weight.dtype, device=old.weight.device))
        attn.num_key_value_groups = heads // kv_heads if kv_heads else 0
        if heads == 0:
            skip_attention(attn)
        if selected:
            select_residual_channels(attn, selected[0], selected[1], hidden)
            select_residual_channels(mlp, selected[2], selected[3], hidden)


def _variable_width(family_config, family_model, model_type: str):
    """A config and a causal-LM class of `family_model` whose layers take `layer_widths`."""

    @strict
    class Config(family_config):
        layer_widths: list | None = None  # [heads, kv heads, MLP neurons] of every decoder layer
        output_bias: bool = False  # o_proj and down_proj carry a bias (FLAP's bias compensation)
        # DISP-LLM: per layer, the residual channels [attention reads, attention writes, MLP reads,
        # MLP writes] (None: every layer reads and writes the whole residual stream)
        residual_channels: list | None = None

        def validate_architecture(self):
            """Widths are per layer and head_dim is explicit, so hidden_size % heads need not be 0."""
            if getattr(self, "head_dim", None) is None:
                super().validate_architecture()

    Config.model_type = model_type

    class Model(family_model):
        config_class = Config

        def __init__(self, config):
            super().__init__(config)
            resize_layers(self, config)

    return Config, Model


StructpruneLlamaConfig, StructpruneLlamaForCausalLM = _variable_width(LlamaConfig, LlamaForCausalLM, "structprune_llama")
StructpruneMistralConfig, StructpruneMistralForCausalLM = _variable_width(MistralConfig, MistralForCausalLM, "structprune_mistral")
StructpruneQwen2Config, StructpruneQwen2ForCausalLM = _variable_width(Qwen2Config, Qwen2ForCausalLM, "structprune_qwen2")
StructpruneQwen3Config, StructpruneQwen3ForCausalLM = _variable_width(Qwen3Config, Qwen3ForCausalLM, "structprune_qwen3")
StructpruneGemmaConfig, StructpruneGemmaForCausalLM = _variable_width(GemmaConfig, GemmaForCausalLM, "structprune_gemma")
StructpruneGemma2Config, StructpruneGemma2ForCausalLM = _variable_width(Gemma2Config, Gemma2ForCausalLM, "structprune_gemma2")
StructpruneGemma3TextConfig, StructpruneGemma3ForCausalLM = _variable_width(
    Gemma3TextConfig, Gemma3ForCausalLM, "structprune_gemma3_text")
StructpruneGraniteConfig, StructpruneGraniteForCausalLM = _variable_width(
    GraniteConfig, GraniteForCausalLM, "structprune_granite")
StructpruneSmolLM3Config, StructpruneSmolLM3ForCausalLM = _variable_width(
    SmolLM3Config, SmolLM3ForCausalLM, "structprune_smollm3")
for _name, _cls in list(globals().items()):  # auto_map and pickling find them under these names
    if _name.startswith("Structprune"):
        _cls.__name__ = _cls.__qualname__ = _name

# source model_type -> (config class, model class) of its variable-width form
VARIABLE_WIDTH = {
    "llama": (StructpruneLlamaConfig, StructpruneLlamaForCausalLM),
    "mistral": (StructpruneMistralConfig, StructpruneMistralForCausalLM),
    "qwen2": (StructpruneQwen2Config, StructpruneQwen2ForCausalLM),
    "qwen3": (StructpruneQwen3Config, StructpruneQwen3ForCausalLM),
    "gemma": (StructpruneGemmaConfig, StructpruneGemmaForCausalLM),
    "gemma2": (StructpruneGemma2Config, StructpruneGemma2ForCausalLM),
    "gemma3_text": (StructpruneGemma3TextConfig, StructpruneGemma3ForCausalLM),
    "granite": (StructpruneGraniteConfig, StructpruneGraniteForCausalLM),
    "smollm3": (StructpruneSmolLM3Config, StructpruneSmolLM3ForCausalLM),
}
for _config, _model in list(VARIABLE_WIDTH.values()):
    VARIABLE_WIDTH[_config.model_type] = (_config, _model)  # a variable-width checkpoint pruned again
