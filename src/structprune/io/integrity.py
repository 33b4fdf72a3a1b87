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

from structprune.io.artifacts import SEAL, seal, sha256_path

HEADER_LIMIT = 100 * 2**20  # safetensors' own cap on the header size


class DamagedArtifactError(ValueError):
    """An input file or folder is not whole (truncated, unparsable, edited); the message names it."""


REBUILD_HINT = ("Rerun the workflow (`snakemake`): before it plans, it rebuilds every damaged file its jobs write "
                "and what depends on it; or `snakemake --forcerun {path}`")


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
    """A tensor file (or task items, or a GGUF export) whose bytes differ from the sha256 its `.json` sidecar recorded when it was
    written (a flipped bit, a hand edit, a copy from elsewhere), or whose sidecar is gone or
    holds no hash (nothing could then tell a damaged file from a whole one); None when they match."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return f"its hash record {sidecar.name} is missing"
    try:
        recorded = json.loads(sidecar.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return f"its hash record {sidecar.name} is not readable JSON"
    if not recorded:
        return f"its hash record {sidecar.name} holds no sha256"
    if sha256_path(path) != recorded:
        return f"its sha256 differs from the one {sidecar.name} recorded when it was written"
    return None


def manifest_hash_problem(folder: str | os.PathLike) -> str | None:
    """A file of a folder artifact (checkpoint, dense stream) whose bytes differ from the
    sha256 the folder's manifest.json recorded, or a manifest that records none (None when
    all match)."""
    folder = Path(folder)
    try:
        files = json.loads((folder / "manifest.json").read_text()).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return "manifest.json is missing or not JSON"
    if not files:
        return "manifest.json records no file hashes (written by an older version: rebuild it)"
    for name, recorded in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing (manifest.json lists it)"
        if sha256_path(path) != recorded:
            return f"{name}: its sha256 differs from the one manifest.json recorded"
    return None


def checkpoint_problem(folder: str | os.PathLike, verify_hashes: bool = False, ours: bool = False) -> str | None:
    """Why a checkpoint folder is not whole: config.json parses and every weight file is whole;
    its manifest.json, where there is one, is sealed; with `verify_hashes`, every file also
    matches the sha256 in manifest.json (a full read: what a stage does before it loads; the
    workflow's scan before planning does it for folders edited since). `ours`: a folder the
    workflow wrote, which must have a manifest (a user's own Hugging Face folder has none)."""
    folder = Path(folder)
    if not ours and not (folder / "manifest.json").exists():
        verify_hashes = False
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
    if ours or (folder / "manifest.json").exists():
        problem = sealed_json_problem(folder / "manifest.json")
        if problem:
            return f"manifest.json: {problem}"
    return manifest_hash_problem(folder) if verify_hashes else None


def _edited_since(path: Path, record: Path) -> bool:
    """Was `path` written after the `record` (manifest or sidecar) that hashed it? Only then does
    the scan before planning read it whole to compare hashes: cheap for untouched gigabytes.
    Hidden files (Snakemake's `.snakemake_timestamp`, touched after every folder job) are not
    artifacts and never count."""
    if path.name.startswith("."):
        return False
    try:
        return path.stat().st_mtime > record.stat().st_mtime
    except OSError:
        return False


def _folder_edited(folder: Path) -> bool:
    """A file of a folder artifact written after the manifest that hashed it."""
    return any(_edited_since(p, folder / "manifest.json") for p in folder.iterdir() if p.name != "manifest.json")


def _sidecar_problem(path: Path) -> str | None:
    """A sidecar-hashed file (tensors, task items, GGUF export): hashed when its record is gone
    or older than the file."""
    sidecar = path.with_suffix(".json")
    return tensors_hash_problem(path) if not sidecar.is_file() or _edited_since(path, sidecar) else None


def damaged_artifacts(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """(path, problem) of every damaged artifact under a workflow's folder: tensor files, task
    items, GGUF exports, checkpoint and dense-stream folders in resources/ and results/, and
    the stage JSONs; one walk of each tree."""
    root = Path(root)
    found = []

    def finished(path: Path) -> bool:
        """Not a write in progress (".<name>.tmp-<pid>")."""
        return not any(part.startswith(".") for part in path.relative_to(root).parts)

    def add(path: Path, problem: str | None) -> None:
        if problem and (path, problem) not in found:
            found.append((path, problem))

    for top in ("resources", "results"):
        base = root / top
        if not base.is_dir():
            continue
        files = [p for p in sorted(base.rglob("*")) if p.is_file() and finished(p)]
        for path in (p for p in files if p.suffix == ".safetensors"):
            if (path.parent / "config.json").is_file() or (path.parent / "manifest.json").is_file():
                continue  # a checkpoint's weights or a dense stream's layers: checked with their folder
            if path.name.startswith("model") and (path.parent / "tokenizer_config.json").is_file():
                add(path.parent, "no config.json")  # a checkpoint folder that lost its config
                continue
            add(path, safetensors_problem(path) or _sidecar_problem(path))
        for config in (p for p in files if p.name == "config.json"):
            add(config.parent, checkpoint_problem(config.parent, verify_hashes=_folder_edited(config.parent), ours=True))
        for path in (p for p in files if p.suffix in (".jsonl", ".gguf")):
            add(path, _sidecar_problem(path))
        for manifest in (p for p in files if p.name == "manifest.json"):
            folder = manifest.parent
            if (folder / "config.json").is_file():
                continue  # a checkpoint: above
            problem = sealed_json_problem(manifest) or next(
                (f"{p.name}: {q}" for p in sorted(folder.glob("*.safetensors")) if (q := safetensors_problem(p))), None)
            add(folder, problem or (manifest_hash_problem(folder) if _folder_edited(folder) else None))
        for path in (p for p in files if p.suffix == ".json" and is_stage_json(p)):
            add(path, sealed_json_problem(path))
    return found


def is_stage_json(path: Path) -> bool:
    """A stage JSON a later job reads (its tables), sealed with its content's hash: evaluations
    (eval.json, eval/*.json), speed measurements (speed/*.json) and GGUF export records
    (gguf/*.json); not sidecars, manifests or configs."""
    return path.parent.name in ("eval", "speed", "gguf") or path.name == "eval.json"


def _sealed(path: str | os.PathLike) -> tuple[dict | None, str | None]:
    """(payload, None) of a sealed stage JSON, or (None, why it is not what its stage wrote:
    unparsable, no seal, or content that no longer hashes to its seal, an edited digit)."""
    try:
        payload = json.loads(Path(path).read_text())
    except OSError as error:
        return None, f"unreadable ({error})"
    except ValueError as error:
        return None, f"not JSON ({error})"
    if not isinstance(payload, dict) or SEAL not in payload:
        return None, f"no {SEAL} (written by an older version, or by hand)"
    if seal(payload)[SEAL] != payload[SEAL]:
        return None, f"its content differs from what its stage wrote ({SEAL} does not match)"
    return payload, None


def sealed_json_problem(path: str | os.PathLike) -> str | None:
    """Why a sealed stage JSON is not what its stage wrote (None when it is)."""
    return _sealed(path)[1]


def damaged(path: str | os.PathLike, problem: str, rebuild: str | os.PathLike | None = None) -> DamagedArtifactError:
    """The error of a damaged input, naming it and how the workflow rebuilds `rebuild` (default: it)."""
    return DamagedArtifactError(f"{path} is damaged: {problem}. " + REBUILD_HINT.format(path=rebuild or path))


def require_recorded_hash(path: str | os.PathLike) -> None:
    """A sidecar-hashed input (task items, a GGUF export) must match its record before it is used."""
    if problem := tensors_hash_problem(path):
        raise damaged(path, problem)


def read_stage_json(path: str | os.PathLike) -> dict:
    """A sealed stage JSON (evaluation, speed, export record), refused when it is not what its
    stage wrote: a table must not show a hand-edited number."""
    payload, problem = _sealed(path)
    if problem:
        raise damaged(path, problem)
    return payload
