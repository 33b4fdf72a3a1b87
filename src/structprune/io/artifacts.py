"""Atomic outputs and manifests.

Every stage writes into a temporary sibling and renames it into place, so an
interrupted job never leaves a half-written file or folder that Snakemake (or a
person) could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

from structprune import __version__


def remove_stale_temporaries(target: Path) -> None:
    """Delete what a killed earlier attempt at `target` left beside it (`.<name>.tmp-<pid>`,
    `.<name>.old-<pid>`): Snakemake runs one job per output at a time, so any such sibling
    at the start of a write is a dead writer's, and a 7B statistics file is gigabytes."""
    for kind in ("tmp", "old"):
        for stale in target.parent.glob(f".{target.name}.{kind}-*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it is renamed onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{target.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def write_json(path: str | os.PathLike, payload: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


SEAL = "content_sha256"


def seal(payload: dict) -> dict:
    """`payload` with the sha256 of its canonical JSON (sorted keys) under SEAL, so that a later
    job can tell an edited digit from what the stage wrote (integrity.read_stage_json)."""
    body = {k: v for k, v in payload.items() if k != SEAL}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {**body, SEAL: digest}


class NonFiniteOutputError(ValueError):
    """A stage computed NaN or infinity: its output is not written (exit code 2, not a NaN table)."""


def nonfinite_values(value: Any, key: str = "") -> list[tuple[str, float]]:
    """(key, value) of every NaN or infinity in a JSON-like value (a config, a stage's result)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(key or "(value)", value)]
    if isinstance(value, dict):
        return [kv for name, v in value.items() for kv in nonfinite_values(v, f"{key}.{name}" if key else str(name))]
    if isinstance(value, (list, tuple)):
        return [kv for i, v in enumerate(value) for kv in nonfinite_values(v, f"{key}[{i}]")]
    return []


def nonfinite_output(stage: str, place: str, names: list[str], where: str | os.PathLike) -> NonFiniteOutputError:
    """The error of a stage whose output holds NaN or infinity `place` ("in" tensors, "at" keys) `names`."""
    more = " ..." if len(names) > 5 else ""
    return NonFiniteOutputError(f"{stage} produced NaN or infinity {place} {', '.join(names[:5])}{more}; {where} was not written")


def write_stage_json(path: str | os.PathLike, payload: dict, stage: str) -> None:
    """A stage's JSON result (evaluation, speed, export record, manifest), sealed and written
    atomically; refused when it holds NaN or infinity, naming the stage and the keys."""
    bad = [key for key, _ in nonfinite_values(payload)]
    if bad:
        raise nonfinite_output(stage, "at", bad, path)
    write_json(path, seal(payload))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def sha256_path(path: str | os.PathLike) -> str:
    """Hash of a file, or of a folder's files (names and contents, sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    """The commit of the structprune checkout, if the code runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "structprune": __version__}
    for name in ("torch", "transformers", "lm_eval", "datasets", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def build_manifest(
    stage: str,
    inputs: dict[str, str | os.PathLike],
    parameters: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What made an output: inputs' hashes, parameters, versions and commit. No wall time: the
    manifest sits in the folder its consumers hash, so identical runs must write identical
    bytes (Snakemake's benchmark files keep every job's time)."""
    return {
        "stage": stage,
        "inputs": {name: {"path": str(p), "sha256": sha256_path(p)} for name, p in inputs.items()},
        "parameters": parameters,
        "versions": package_versions(),
        "git_commit": git_commit(),
        **(extra or {}),
    }
