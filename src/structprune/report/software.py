"""The software behind a table, read from its checkpoints' manifests: a number is only as
reproducible as the library versions and the code that made it, and a cached job may come from
an older environment than the report's. Cached jobs of mixed versions are listed as such."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from structprune.io.integrity import read_stage_json

# python and the packages whose versions can move a number (the manifests also hold structprune's)
NUMERIC_PACKAGES = ("python", "torch", "transformers", "lm_eval", "datasets", "safetensors")


def checkpoint_manifests(checkpoints: list[str]) -> list[dict]:
    """The manifest of each checkpoint folder that has one (a model read from elsewhere may not)."""
    found = []
    for folder in dict.fromkeys(checkpoints):
        path = Path(folder) / "manifest.json"
        if path.is_file():
            found.append(read_stage_json(path))
    return found


def _counted(values: list[str]) -> str:
    """One value, or each value with how many checkpoints it made (most first)."""
    counts = Counter(values)
    if len(counts) == 1:
        return values[0]
    return " / ".join(f"{value} ({n})" for value, n in counts.most_common())


def software_note(manifests: list[dict]) -> str:
    """One paragraph: the package versions and code commits the checkpoints were made with."""
    if not manifests:
        return ""
    versions = [m.get("versions") or {} for m in manifests]
    parts = []
    for package in NUMERIC_PACKAGES:
        seen = [v[package] for v in versions if package in v]
        if seen:
            parts.append(f"{package} {_counted(seen)}")
    commits = [str(m["git_commit"])[:7] for m in manifests if m.get("git_commit")]
    text = (f"Software, from the manifests of the {len(manifests)} checkpoints (the environment of the job that made "
            f"each): {', '.join(parts)}")
    if commits:
        text += f"; structprune at commit {_counted(commits)}"
    missing = len(manifests) - len(commits)
    if missing:
        text += f" ({missing} outside a git checkout)"
    return text + "."
