"""Llama with a different width in every decoder layer, loadable offline with `trust_remote_code`.

A checkpoint whose layers keep different numbers of heads or neurons (global
structures such as FLAP's, LLM-Pruner's unpruned first/last layers), or whose
head count no longer divides ``hidden_size`` (which the stock ``LlamaConfig``
rejects), or whose o_proj / down_proj carry a bias (FLAP's compensation;
``output_bias``), is saved with this file as ``modeling_structprune_llama.py`` and an
``auto_map`` in its config, so that
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` builds
real smaller layers. The per-layer widths use transformers' own heterogeneous
config support (``per_layer_config``, transformers >= 5); the only additions are
a config that skips the global head-divisibility check and a model that builds
each decoder layer from its own layer config. This file must import nothing
from structprune: it travels inside checkpoints.
"""

from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)

MODULE_NAME = "modeling_structprune_llama"


@strict
class StructpruneLlamaConfig(LlamaConfig):
    model_type = "structprune_llama"
    output_bias: bool = False  # o_proj and down_proj carry a bias (FLAP's bias compensation)

    def validate_architecture(self):
        """Widths are per layer and head_dim is explicit, so hidden_size % heads need not be 0."""
        if self.head_dim is None:
            super().validate_architecture()


class StructpruneLlamaModel(LlamaModel):
    config_class = StructpruneLlamaConfig

    def __init__(self, config: StructpruneLlamaConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        n_layers = config.num_hidden_layers
        layer_configs = config.per_layer_config if config.is_heterogeneous else [config] * n_layers
        self.layers = nn.ModuleList([LlamaDecoderLayer(layer_configs[i], i) for i in range(n_layers)])
        if getattr(config, "output_bias", False):
            for layer in self.layers:
                for parent, name in ((layer.self_attn, "o_proj"), (layer.mlp, "down_proj")):
                    old = getattr(parent, name)
                    setattr(parent, name, nn.Linear(old.in_features, old.out_features, bias=True))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class StructpruneLlamaForCausalLM(LlamaForCausalLM):
    config_class = StructpruneLlamaConfig

    def __init__(self, config: StructpruneLlamaConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.model = StructpruneLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
