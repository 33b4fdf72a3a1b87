"""Loading model sources and checkpoints (what a source string names: sources.py; which
families are supported: families/; the widths of a loaded model: geometry.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from structprune.model.sources import ModelSourceError, resolve_model_source

VARWIDTH_MODULE = "modeling_structprune"  # varwidth.MODULE_NAME, without importing transformers here


def foreign_code(config: dict) -> dict:
    """The `auto_map` entries of a config.json that point at code other than our own
    variable-width class (someone's Hub repository or a module shipped in the folder)."""
    auto_map = config.get("auto_map") or {}
    return {k: v for k, v in auto_map.items() if not (isinstance(v, str) and v.startswith(VARWIDTH_MODULE + "."))}


def read_model_config(folder: str | os.PathLike, rebuild: str) -> dict:
    """config.json of a checkpoint folder, or an error that names the file and how to rebuild it."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"{path} cannot be read as JSON ({error}); {rebuild}") from error
    if not isinstance(config, dict):
        raise ModelSourceError(f"{path} is not a JSON object; {rebuild}")
    return config


def refuse_foreign_code(config: dict, where: str) -> None:
    """structprune runs no code from outside this package: a config whose auto_map names other
    code is refused before transformers could fetch or import it."""
    foreign = foreign_code(config)
    if foreign:
        raise ModelSourceError(
            f"{where}: config.json maps {sorted(foreign)} to code outside structprune ({foreign}); structprune "
            "never runs third-party model code (trust_remote_code). Use a checkpoint of a stock architecture "
            "(remove auto_map after converting it), or a GGUF file."
        )


def register_varwidth() -> None:
    """Our variable-width Llama as a local architecture, so checkpoints that name it in their
    auto_map load our class from this package, not the copy inside the folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from structprune.model.varwidth import VARIABLE_WIDTH

    for config_class, model_class in set(VARIABLE_WIDTH.values()):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)


def load_source(source: str, dtype: torch.dtype = torch.float32):
    """Load (model, tokenizer) from a config source, dequantising GGUF weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model_source(source)
    kwargs = {"gguf_file": resolved.gguf_file} if resolved.gguf_file else {}
    if not resolved.gguf_file and Path(resolved.location).is_dir():
        refuse_foreign_code(read_model_config(resolved.location, "fix or replace the source folder"), f"model source {source!r}")
        register_varwidth()  # a structprune checkpoint with per-layer widths as a source
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.location, trust_remote_code=False, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(resolved.location, dtype=dtype, trust_remote_code=False, **kwargs)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise ModelSourceError(
            f"model source {source!r} needs third-party code (its config maps to a custom architecture); "
            "structprune never runs it: use a checkpoint of a stock architecture or a GGUF file"
        ) from error
    except OSError as error:
        raise ModelSourceError(
            f"model source {source!r} could not be loaded ({error}). Offline, the Hugging Face "
            "Hub is unreachable: set the model's `source` in config.yaml to a local checkpoint "
            "folder or a GGUF file."
        ) from error
    from structprune.model.families import family_problem

    if problem := family_problem(model.config.to_dict(), f"model source {source!r}"):
        raise ModelSourceError(problem)
    # A GGUF load leaves a quantization_config behind; the saved weights are plain floats.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # weights are already dequantised floats
    model.is_quantized = False
    model.eval()
    return model, tokenizer


def load_checkpoint(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """Load a materialised or pruned checkpoint folder written by this package."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a checkpoint folder (no config.json): run the `model` or `prune` "
            "stage that produces it first"
        )
    from structprune.io.integrity import checkpoint_problem

    problem = checkpoint_problem(path, verify_hashes=True)
    if problem:
        raise ModelSourceError(
            f"checkpoint {path} is damaged: {problem}. Rerun the workflow (`snakemake`: before it plans, it "
            f"rebuilds every damaged artifact its jobs write, and what reads it), or `snakemake --forcerun {path}`"
        )
    config = read_model_config(path, "delete the folder and rerun the stage that wrote it")
    refuse_foreign_code(config, str(path))
    from structprune.model.families import family_problem

    if problem := family_problem(config, str(path)):
        raise ModelSourceError(problem)
    register_varwidth()  # our per-layer-width class, from this package (never the folder's copy)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
    model.eval()
    return model, tokenizer
