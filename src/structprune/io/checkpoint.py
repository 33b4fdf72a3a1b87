"""Checkpoint folders and tensor files: written atomically, each with a manifest."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from structprune.io.artifacts import (
    atomic_dir,
    atomic_file,
    nonfinite_output,
    sha256_path,
    write_json,
    write_stage_json,
)
from structprune.io.integrity import (  # noqa: F401
    DamagedArtifactError,
    damaged,
    safetensors_problem,
    tensors_hash_problem,
)
from structprune.model.geometry import count_parameters


def check_finite(tensors, stage: str, where: str | os.PathLike) -> None:
    """Refuse to write NaN or infinity (a damp of .inf, a diverged solve): the job fails naming
    the stage and the tensors, instead of writing a model whose perplexity is nan."""
    bad = [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise nonfinite_output(stage, "in", bad, where)


def save_checkpoint(model, tokenizer, out_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """A Hugging Face folder (safetensors) loadable with `AutoModelForCausalLM.from_pretrained`
    (with ``trust_remote_code=True`` when the layers have different widths); its manifest
    records each file's sha256 and is sealed."""
    check_finite(model.state_dict().items(), manifest.get("stage", "this stage"), out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if getattr(model.config, "auto_map", None):  # per-layer widths: ship the model code too
            from structprune.model import varwidth

            shutil.copy(varwidth.__file__, tmp / f"{varwidth.MODULE_NAME}.py")
        tokenizer.save_pretrained(tmp)
        files = {p.name: sha256_path(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        write_stage_json(tmp / "manifest.json", {**manifest, "parameters_count": count_parameters(model), "files": files},
                         manifest.get("stage", "this stage"))


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, Any],
                 timing: dict[str, float] | None = None) -> None:
    """A safetensors file; `metadata` (JSON-serialisable) goes into its header and a `.json`
    sidecar, `timing` into the sidecar only (under "timing"), so identical runs write identical
    tensor files."""
    path = Path(path)
    check_finite(tensors.items(), metadata.get("stage") or Path(path).stem, path)
    header = {"structprune": json.dumps(metadata, sort_keys=True)}
    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)
        digest = sha256_path(tmp)
    write_json(path.with_suffix(".json"), {**metadata, "sha256": digest, **({"timing": timing} if timing else {})})


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the stage that produces it first")
    problem = safetensors_problem(path) or tensors_hash_problem(path)
    if problem:
        raise damaged(path, problem)
    return load_file(str(path))
