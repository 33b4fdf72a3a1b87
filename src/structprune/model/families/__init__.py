"""Model families: one module per family that structprune prunes correctly (`llama`, `mistral`,
`qwen2`, `qwen3`, `gemma`, `granite`, `smollm3`), and the families it refuses with the reason (`refused`). Checked before any
job: at planning for a local folder or GGUF source, or for a model already built, and in the
`model` stage for a Hub id. Standard library only.

Adding a family: a module with its `FAMILY` (config and export rules), listed in `ADAPTERS`,
its variable-width class in `model/varwidth.py`, and its tiny model in tests/test_family_adapters.py.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from structprune.model.families import gemma, granite, llama, mistral, qwen2, qwen3, refused, smollm3
from structprune.model.families.base import Family
from structprune.model.sources import ModelSourceError, resolve_model_source

ADAPTERS = (llama.FAMILY, mistral.FAMILY, qwen2.FAMILY, qwen3.FAMILY, gemma.GEMMA, gemma.GEMMA2, gemma.GEMMA3,
            granite.FAMILY, smollm3.FAMILY)
FAMILIES: tuple[Family, ...] = ADAPTERS + refused.FAMILIES
SUPPORTED_MODEL_TYPES = tuple(t for f in ADAPTERS for t in f.model_types)
SUPPORTED_GGUF_ARCHITECTURES = tuple(a for f in ADAPTERS for a in f.gguf_architectures)
SUPPORTED = ", ".join(f.name for f in ADAPTERS)


def family_of(model_type: str | None) -> Family | None:
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def family_problem(config: dict, where: str) -> str | None:
    """Why a model of this config.json (as a dict) cannot be pruned correctly, or None."""
    model_type = config.get("model_type")
    if model_type is None and "gguf_architecture" in config:  # a GGUF file no family reads
        return (f"{where}: GGUF architecture {config['gguf_architecture']!r} is not supported as a source (GGUF sources: "
                f"{', '.join(SUPPORTED_GGUF_ARCHITECTURES)}); supported families: {SUPPORTED}")
    family = family_of(model_type)
    names = ", ".join(config.get("architectures") or []) or "no architectures listed"
    if family is None:
        return (f"{where}: model family {model_type!r} ({names}) is not supported: a checkpoint of it would compute "
                f"something else. Supported families: {SUPPORTED}")
    if family.refused:
        return (f"{where}: model family {model_type!r} ({family.name}) is not supported yet: {family.refused}. "
                f"Supported families: {SUPPORTED}")
    problem = family.config_problem(config)
    return f"{where}: {family.name}: {problem}" if problem else None


def refit_problem(config: dict, where: str, recipe) -> str | None:
    """Why `recipe`'s refit (a `Recipe`: its reconstruct and target) cannot run on this family."""
    family = family_of(config.get("model_type"))
    blocked = recipe.reconstruct == "refit" and recipe.target == "block"
    return f"{where}: {family.name}: {family.no_block_target}" if family and family.no_block_target and blocked else None


def export_problem(config: dict, where: str) -> str | None:
    """Why a supported model's GGUF export would not compute what the checkpoint does, or None."""
    family = family_of(config.get("model_type"))
    problem = family.export_problem(config) if family and family.supported else None
    return f"{where}: {problem}" if problem else None


@functools.lru_cache(maxsize=None)
def gguf_architecture(path: str | Path) -> str | None:
    """llama.cpp's `general.architecture` of a GGUF file (None when the gguf reader is missing);
    read once per file, however many planning checks ask."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    field = GGUFReader(str(path)).fields["general.architecture"]
    return bytes(field.parts[field.data[0]]).decode()


def source_config(source: str) -> dict | None:
    """What a configured source says of its family without loading it: a local folder's
    config.json, or for a GGUF file its llama.cpp architecture and the model type a supported
    family loads it as (None when none does); None for a Hub id, a source that does not resolve
    or a file that cannot be read (the `model` stage names those)."""
    try:
        resolved = resolve_model_source(source)
        if resolved.gguf_path:
            arch = gguf_architecture(resolved.gguf_path)
            if arch is None:
                return None
            family = next((f for f in ADAPTERS if arch in f.gguf_architectures), None)
            return {"gguf_architecture": arch, "model_type": family.model_types[0] if family else None}
        config = json.loads((Path(resolved.location) / "config.json").read_text())
    except (ModelSourceError, OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None
