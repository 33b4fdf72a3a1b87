"""Which model families structprune computes correctly today, checked before any job.

The engine, statistics hooks, dense stream, scores, slicing, checkpoints and GGUF export
implement the Llama decoder block: pre-norms, rotary q/k without norms, no biases, a gated
SiLU MLP, no multipliers and no sliding window. A model of another family (a Mistral window,
Qwen's q/k/v biases or q/k norms, Gemma's sandwich norms and embedding scale, Granite's
multipliers, fused Phi-3 projections ...) would be pruned into something that computes
otherwise, with exit code 0. Until a family has its adapter (issue #28), it is refused here,
with the reason, before any job: at planning for a local folder or GGUF source, or for a
model already built, and in the `model` stage for a Hub id. Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

from structprune.model.sources import ModelSourceError, resolve_model_source

SUPPORTED_MODEL_TYPES = ("llama", "structprune_llama")  # ours: the per-layer-width Llama (varwidth.py)
SUPPORTED_GGUF_ARCHITECTURES = ("llama",)  # llama.cpp's name; transformers loads it as LlamaForCausalLM
TRACKED = "Mistral, Qwen2/2.5/3, Gemma 2/3, Granite, Phi-3 and OLMo2 are planned (issue #28)"


def family_problem(config: dict, where: str) -> str | None:
    """Why a model of this config.json (as a dict) cannot be pruned correctly, or None."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        names = ", ".join(config.get("architectures") or []) or "no architectures listed"
        return (f"{where}: model family {model_type!r} ({names}) is not supported: structprune implements the Llama "
                f"block only, and a checkpoint of another family would compute something else. Supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES[:1])}; {TRACKED}")
    biased = [key for key in ("attention_bias", "mlp_bias") if config.get(key)]
    if biased:
        return (f"{where}: a Llama with {' and '.join(biased)} is not supported (the slicing and the per-layer-width "
                "class drop biases); use a checkpoint without them")
    return None


def export_problem(config: dict, where: str) -> str | None:
    """Why a supported model's GGUF export would not compute what the checkpoint does, or None."""
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind != "default":
        return (f"{where}: its rope scaling ({kind!r}, Llama-3.1/3.2 style) is not exported to GGUF yet, so the "
                "export would compute other positions; set `export: {enabled: false}` for this model")
    return None


def gguf_architecture(path: str | Path) -> str | None:
    """llama.cpp's `general.architecture` of a GGUF file (None when the gguf reader is missing)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    field = GGUFReader(str(path)).fields["general.architecture"]
    return bytes(field.parts[field.data[0]]).decode()


def source_family_problem(source: str, where: str) -> str | None:
    """The family problem of a configured source that can be read without loading it: a local
    folder's config.json or a GGUF file's architecture; None for a Hub id (the `model` stage
    checks it after loading) or a source that does not resolve (the `model` stage says why)."""
    try:
        resolved = resolve_model_source(source)
    except ModelSourceError:
        return None
    if resolved.gguf_path:
        arch = gguf_architecture(resolved.gguf_path)
        if arch is not None and arch not in SUPPORTED_GGUF_ARCHITECTURES:
            return (f"{where}: GGUF architecture {arch!r} is not supported: structprune implements the Llama block "
                    f"only (GGUF architecture 'llama'); {TRACKED}")
        return None
    config = Path(resolved.location) / "config.json"
    if config.is_file():
        try:
            return family_problem(json.loads(config.read_text()), where)
        except ValueError:
            return None  # unreadable: the model stage names it
    return None
