"""Is an artifact whole? Cheap structural checks of safetensors files, checkpoint folders and
JSON outputs, standard library only.

Every write is atomic (artifacts.py), so a damaged file comes from outside the pipeline: a full
disk, a copy cut short, a hand edit. The stages check what they read (`load_tensors`,
`load_checkpoint`) and fail naming the file; the workflow checks every existing artifact before
it plans (common.smk) and forces the damaged ones its jobs write to rerun, with what reads them.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from structprune.artifacts import sha256_path

HEADER_LIMIT = 100 * 2**20  # safetensors' own cap on the header size


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why a safetensors file is not whole (None when it is): the 8-byte header length, the
    JSON header, and a file size equal to header plus the last tensor's end offset."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            (length,) = struct.unpack("<Q", head)
            if length > HEADER_LIMIT or 8 + length > size:
                return f"header of {length} bytes does not fit in the file's {size} bytes (truncated?)"
            header = json.loads(handle.read(length))
    except OSError as error:
        return f"unreadable ({error})"
    except ValueError as error:
        return f"header is not JSON ({error})"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    try:
        ends = [int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        return "header entries lack valid data_offsets"
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"{size} bytes where the header describes {expected} (truncated or padded)"
    return None


def json_problem(path: str | os.PathLike) -> str | None:
    try:
        json.loads(Path(path).read_text())
    except OSError as error:
        return f"unreadable ({error})"
    except ValueError as error:
        return f"not JSON ({error})"
    return None


def tensors_hash_problem(path: str | os.PathLike) -> str | None:
    """A tensor file whose bytes differ from the sha256 its `.json` sidecar recorded when it was
    written (a flipped bit, a hand edit, a copy from elsewhere); None when they match or when
    no hash was recorded."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    try:
        recorded = json.loads(sidecar.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    if recorded and sha256_path(path) != recorded:
        return f"its sha256 differs from the one {sidecar.name} recorded when it was written"
    return None


def manifest_hash_problem(folder: str | os.PathLike) -> str | None:
    """A checkpoint file whose bytes differ from the sha256 the folder's manifest.json recorded
    (None when all match, or for folders written before manifests recorded them)."""
    folder = Path(folder)
    try:
        files = json.loads((folder / "manifest.json").read_text()).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return None
    for name, recorded in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing (manifest.json lists it)"
        if sha256_path(path) != recorded:
            return f"{name}: its sha256 differs from the one manifest.json recorded"
    return None


def checkpoint_problem(folder: str | os.PathLike, verify_hashes: bool = False) -> str | None:
    """Why a checkpoint folder is not whole: config.json parses and every weight file is whole;
    with `verify_hashes`, every file also matches the sha256 in manifest.json (a full read:
    what a stage does before it loads; the workflow's scan before planning skips it)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return "no config.json"
    problem = json_problem(folder / "config.json")
    if problem:
        return f"config.json: {problem}"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    for path in weights:
        problem = safetensors_problem(path)
        if problem:
            return f"{path.name}: {problem}"
    return manifest_hash_problem(folder) if verify_hashes else None


def _edited_since(path: Path, record: Path) -> bool:
    """Was `path` written after the `record` (manifest or sidecar) that hashed it? Only then does
    the scan before planning read it whole to compare hashes: cheap for untouched gigabytes."""
    try:
        return path.stat().st_mtime > record.stat().st_mtime
    except OSError:
        return False


def damaged_artifacts(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """(path, problem) of every damaged artifact under a workflow's folder: tensor files and
    checkpoint folders in resources/ and results/, and evaluation JSONs."""
    root = Path(root)
    found = []

    def finished(path: Path) -> bool:
        """Not a write in progress (".<name>.tmp-<pid>")."""
        return not any(part.startswith(".") for part in path.relative_to(root).parts)

    for top in ("resources", "results"):
        base = root / top
        if not base.is_dir():
            continue
        for path in filter(finished, sorted(base.rglob("*.safetensors"))):
            if (path.parent / "config.json").is_file():
                continue  # a checkpoint's weights: checked with its folder
            if path.name.startswith("model") and (path.parent / "tokenizer_config.json").is_file():
                if (path.parent, "no config.json") not in found:
                    found.append((path.parent, "no config.json"))  # a checkpoint folder that lost its config
                continue
            problem = safetensors_problem(path) or (tensors_hash_problem(path) if _edited_since(path, path.with_suffix(".json")) else None)
            if problem:
                found.append((path, problem))
        for config in filter(finished, sorted(base.rglob("config.json"))):
            folder = config.parent
            edited = any(_edited_since(p, folder / "manifest.json") for p in folder.iterdir() if p.name != "manifest.json")
            problem = checkpoint_problem(folder, verify_hashes=edited)
            if problem:
                found.append((config.parent, problem))
        for path in filter(finished, sorted(base.rglob("eval*.json")) + sorted(base.rglob("eval/*.json"))):
            problem = json_problem(path)
            if problem and (path, problem) not in found:
                found.append((path, problem))
    return found
