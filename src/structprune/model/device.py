"""Where and in which precision a stage computes.

``device`` is ``auto`` (a GPU when torch sees one, else the CPU), ``cpu`` or
``cuda[:N]``; ``dtype`` is ``auto`` (float32 on the CPU, bfloat16 on a GPU),
``float32``, ``bfloat16`` or ``float16``. Weights live in ``dtype``; statistics
and least-squares systems are accumulated in float64 whatever the weights are.

Stages that walk the model one decoder layer at a time (calibrate, the layer-wise prune,
the sequential prune) keep the decoder layers on the host and move each one to
the device only while it is processed (`layer_on_device`), so a model larger
than the GPU's memory (LLaMA-7B in bfloat16 on a 16 GB card) still prunes; the
embeddings, final norm, rotary tables and LM head sit on the device throughout.
Whole-model stages (evaluate, gradients, self-generated calibration) move the
whole model (`place_whole`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device a setting names; an unavailable GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = name.split(":")[0]
    if base not in DEVICES[1:]:
        raise ValueError(f"device {name!r}: choose auto, cpu or cuda[:N]")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but torch sees no GPU (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda is not None}): set device: cpu or auto, or install a CUDA build of torch"
        )
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Weight precision: float32 on the CPU, bfloat16 on a GPU unless configured."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}: choose auto or one of {sorted(DTYPES)}")
    return DTYPES[name]


def place_whole(model: nn.Module, device: torch.device) -> nn.Module:
    return model.to(device)


def place_layerwise(model: nn.Module, device: torch.device) -> nn.Module:
    """Everything but the decoder layers on `device`; the layers stay where they are (the host)."""
    for name, child in model.model.named_children():
        if name != "layers":
            child.to(device)
    for name, child in model.named_children():
        if name != "model":
            child.to(device)
    return model


def execution_device(model: nn.Module) -> torch.device:
    """Where a model's layer-by-layer passes run: the device of its input embeddings."""
    return model.get_input_embeddings().weight.device


@contextmanager
def layer_on_device(layer: nn.Module, device: torch.device):
    """Move one decoder layer to `device` for the duration of the block, then back home."""
    home = next(layer.parameters()).device
    if home == device:
        yield layer
        return
    layer.to(device)
    try:
        yield layer
    finally:
        layer.to(home)
