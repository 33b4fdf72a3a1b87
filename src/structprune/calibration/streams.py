"""Run a causal LM one decoder layer at a time (the sparsegpt / wanda pattern).

The embeddings of every calibration batch are captured once, together with the
keyword arguments the model passes to each decoder layer (rotary position
embeddings, attention mask: per layer, since sliding-window layers get their own). Each layer is then applied to all batches before
the next one is touched, so peak memory is one layer's activations plus the
hidden states of the calibration set, never the whole model's activations.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from structprune.model.device import execution_device
from structprune.model.geometry import decoder_layers


class _Captured(Exception):
    pass


@dataclass
class LayerBatch:
    hidden: torch.Tensor  # (batch, seq, hidden) entering the current layer
    layer_kwargs: list[dict[str, Any]]  # what the model passes to each decoder layer, by index

    def kwargs_for(self, layer: nn.Module) -> dict[str, Any]:
        """The keyword arguments the model gives `layer`: families with sliding-window layers
        (Mistral, Qwen2/3, Gemma) pass each layer its own mask, Gemma 3 its own rotary table."""
        return self.layer_kwargs[layer.self_attn.layer_idx]


class _Recorder(nn.Module):
    """Stands in for a decoder layer during the capture: records what the model passes it and
    passes the hidden states through; the last one stops the forward."""

    def __init__(self, layer: nn.Module, last: bool, seen: list):
        super().__init__()
        self.last, self.seen = last, seen
        self.attention_type = getattr(layer, "attention_type", None)  # read by some families' loops

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values")}
        kwargs["use_cache"] = False
        self.seen.append((hidden.detach(), kwargs))
        if self.last:
            raise _Captured
        return hidden


def capture_layer_inputs(model: nn.Module, input_ids: torch.Tensor, batch_size: int) -> list[LayerBatch]:
    """Hidden states entering layer 0 and the keyword arguments the model passes to every
    layer, for each batch of `input_ids` (on the model's execution device). The layers
    themselves are not run: recorders stand in for them during the capture (no hook of a
    real layer fires)."""
    layers = decoder_layers(model)
    device = execution_device(model)
    captured: list[LayerBatch] = []
    seen: list = []
    real = list(layers)
    for index, layer in enumerate(real):
        layers[index] = _Recorder(layer, index == len(real) - 1, seen)
    try:
        with torch.no_grad():
            for start in range(0, input_ids.shape[0], batch_size):
                seen.clear()
                try:
                    model(input_ids[start : start + batch_size].to(device), use_cache=False)
                except _Captured:
                    pass
                captured.append(LayerBatch(seen[0][0], [kwargs for _, kwargs in seen]))
    finally:
        for index, layer in enumerate(real):
            layers[index] = layer
    return captured


def apply_layer(layer: nn.Module, batch: LayerBatch) -> torch.Tensor:
    with torch.no_grad():
        out = layer(batch.hidden, **batch.kwargs_for(layer))
    return out[0] if isinstance(out, tuple) else out


def propagate(layer: nn.Module, batches: list[LayerBatch]) -> None:
    """Advance every batch through `layer` in place (hooks on the layer see each batch)."""
    for batch in batches:
        batch.hidden = apply_layer(layer, batch)


@contextmanager
def tapped(taps: dict[str, tuple[nn.Module, str]]):
    """Record each tapped module's input ("in") or output ("out") under its key while active."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for key, (module, where) in taps.items():
        if where == "in":
            handles.append(module.register_forward_pre_hook(lambda _m, args, key=key: seen.__setitem__(key, args[0].detach())))
        else:
            handles.append(module.register_forward_hook(lambda _m, _a, out, key=key: seen.__setitem__(key, out.detach())))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def paired_pass(
    layer: nn.Module, pruned: list[LayerBatch], taps: dict[str, tuple[str, str, str]], consume,
    extra_hooks=(), dense_taps: list[dict] | None = None,
) -> None:
    """Run the pruned stream once through `layer` (not advancing it) and hand each batch's
    tapped tensors to `consume`. `taps` maps key -> (stream "dense"|"pruned", submodule path,
    "in"|"out"); the dense side is read from `dense_taps` (`densestream`'s `taps`, so the
    dense layer never reruns); `extra_hooks` are callables attaching more hooks to `layer` (statistics)."""
    dense_keys = {key: (path, where) for key, (stream, path, where) in taps.items() if stream == "dense"}
    if dense_keys and dense_taps is None:
        raise ValueError(f"taps {sorted(dense_keys)} read the dense stream: pass the dense stream's taps")
    modules = {key: (layer.get_submodule(path), where) for key, (stream, path, where) in taps.items() if stream == "pruned"}
    handles = [handle for attach in extra_hooks for handle in attach(layer)]
    try:
        with tapped(modules) as seen:
            for index, batch in enumerate(pruned):
                seen.update({key: dense_taps[index][site] for key, site in dense_keys.items()})
                apply_layer(layer, batch)
                consume(seen)
    finally:
        for handle in handles:
            handle.remove()


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits from the hidden states leaving its last decoder layer: the final norm,
    the LM head, and what a family's head adds (Gemma 2's soft-capping, Granite's divisor)."""
    logits = model.lm_head(model.model.norm(hidden))
    if cap := getattr(model.config, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cap) * cap
    if scaling := getattr(model.config, "logits_scaling", None):
        logits = logits / scaling
    return logits
