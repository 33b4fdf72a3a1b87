"""What the weights allow: the largest speed-up a pruned model can show over the dense one.

A roofline argument: a pass takes at least its bytes over the memory bandwidth and at least
its multiply-adds over the peak compute, so the ratio of two passes' times is at most the
larger of the ratio of their bytes and the ratio of their multiply-adds (max(a, b) / max(c, d)
<= max(a / c, b / d)). Per pass:

- bytes: every weight a step reads (batch-1 decode reads every matrix once per token; the
  input embedding only a row unless it is also the output layer);
- multiply-adds: the decoder blocks' matrices per token, the output layer per scored token
  (decode: every token; prefill: the last one), and in prefill the attention scores
  (QK^T and AV: 2 x query width x position per layer and token, summed over the prompt).
  Decode's attention over its short context and the KV cache's bytes are left out (under 1 %
  of SmolLM2-135M's at 80 tokens), so the bound is slightly generous.

Both assume the two models use bytes and multiply-adds equally well (the same kernels; a
width that tiles worse only lowers a ratio). A measured ratio above its bound is a measurement fault (machine noise, or the dense run
slowed), never a gain. Costs come from the model's parameters (`model_cost`) or from a GGUF
file's tensor list (`tensor_cost`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Cost:
    """A model's work per token: bytes read per decode step and multiply-adds."""

    read_bytes: int
    block_macs: int  # the decoder blocks' matrices: multiply-adds per token
    output_macs: int  # the output layer's per scored token
    query_width: int  # heads x head_dim, summed over layers (attention-score work per position)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def model_cost(model: nn.Module) -> Cost:
    """The cost of a transformers causal LM from its parameters (as loaded: their dtype)."""
    from structprune.model.geometry import decoder_layers

    layers = decoder_layers(model)
    read = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights once
    embedding, output = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if embedding is not output:
        read -= embedding.numel() * embedding.element_size()  # a row per token
    block = sum(m.weight.numel() for m in layers.modules() if isinstance(m, nn.Linear))
    query = sum(m.out_features for name, m in layers.named_modules() if name.endswith("q_proj"))
    return Cost(read, block, output.numel(), query)


def tensor_cost(tensors: list[tuple[str, list[int], int]]) -> Cost:
    """The cost of a GGUF file from its tensors: (name, dims innermost first, bytes)."""
    sizes = {name: (dims, n_bytes) for name, dims, n_bytes in tensors}
    read = sum(n_bytes for _, n_bytes in sizes.values())
    output = "output.weight" if "output.weight" in sizes else "token_embd.weight"
    if output != "token_embd.weight" and "token_embd.weight" in sizes:
        read -= sizes["token_embd.weight"][1]
    block = sum(math.prod(dims) for name, (dims, _) in sizes.items()
                if name.startswith("blk.") and sum(d > 1 for d in dims) >= 2)
    query = sum(math.prod(dims) // dims[0] for name, (dims, _) in sizes.items() if name.endswith(".attn_q.weight"))
    return Cost(read, block, math.prod(sizes[output][0]), query)


def prefill_macs(cost: Cost, length: int) -> int:
    """Multiply-adds of one prompt of `length` tokens (only the last one scored)."""
    return length * cost.block_macs + cost.query_width * length * (length + 1) + cost.output_macs


def decode_bound(dense: Cost, pruned: Cost) -> float:
    """The largest decode speed-up (any batch: the weights are read once per step)."""
    return max(dense.read_bytes / pruned.read_bytes,
               (dense.block_macs + dense.output_macs) / (pruned.block_macs + pruned.output_macs))


def prefill_bound(dense: Cost, pruned: Cost, length: int) -> float:
    """The largest prefill speed-up over prompts of `length` tokens."""
    return max(dense.read_bytes / pruned.read_bytes, prefill_macs(dense, length) / prefill_macs(pruned, length))


def is_fault(low: float, high: float, bound: float) -> bool:
    """The whole interval lies above the bound by more than its half-width: the measurement
    is wrong (a speed-up the weights do not allow), not a gain."""
    return low - bound > (high - low) / 2
