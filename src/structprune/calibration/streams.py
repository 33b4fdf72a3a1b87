"""Run a causal LM one decoder layer at a time (the sparsegpt / wanda pattern).

The embeddings of every calibration batch are captured once, together with the
keyword arguments the model passes to its first decoder layer (rotary position
embeddings, attention mask). Each layer is then applied to all batches before
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
    kwargs: dict[str, Any]  # what the model passes to every decoder layer


def capture_layer_inputs(model: nn.Module, input_ids: torch.Tensor, batch_size: int) -> list[LayerBatch]:
    """Hidden states and layer kwargs entering layer 0, for each batch of `input_ids`
    (on the model's execution device; the layers themselves are not run)."""
    first = decoder_layers(model)[0]
    device = execution_device(model)
    captured: list[LayerBatch] = []

    def grab(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values")}
        kwargs["use_cache"] = False
        captured.append(LayerBatch(hidden.detach(), kwargs))
        raise _Captured

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            for start in range(0, input_ids.shape[0], batch_size):
                try:
                    model(input_ids[start : start + batch_size].to(device), use_cache=False)
                except _Captured:
                    pass
    finally:
        handle.remove()
    return captured


def apply_layer(layer: nn.Module, batch: LayerBatch) -> torch.Tensor:
    with torch.no_grad():
        out = layer(batch.hidden, **batch.kwargs)
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
