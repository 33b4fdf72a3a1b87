"""The table names the software its checkpoints were made with (their manifests), and says so
when cached jobs come from different environments or commits."""

from __future__ import annotations

from structprune.io.artifacts import seal, write_json
from structprune.report.software import checkpoint_manifests, software_note


def manifest(folder, torch_version, commit):
    folder.mkdir(parents=True)
    write_json(folder / "manifest.json", seal({
        "versions": {"python": "3.11.7", "torch": torch_version, "transformers": "5.25.0"}, "git_commit": commit}))
    return str(folder)


def test_one_environment_is_named_once(tmp_path):
    folders = [manifest(tmp_path / name, "2.13.0+cpu", "a" * 40) for name in ("x", "y")]
    text = software_note(checkpoint_manifests(folders + folders))  # a checkpoint read twice counts once
    assert text == ("Software, from the manifests of the 2 checkpoints (the environment of the job that made each): "
                    "python 3.11.7, torch 2.13.0+cpu, transformers 5.25.0; structprune at commit aaaaaaa.")


def test_mixed_environments_are_counted(tmp_path):
    folders = [manifest(tmp_path / "x", "2.13.0+cpu", "a" * 40), manifest(tmp_path / "y", "2.13.0+cpu", "b" * 40),
               manifest(tmp_path / "z", "2.12.0", "b" * 40), str(tmp_path / "no-manifest")]
    text = software_note(checkpoint_manifests(folders))
    assert "3 checkpoints" in text
    assert "torch 2.13.0+cpu (2) / 2.12.0 (1)" in text
    assert "commit bbbbbbb (2) / aaaaaaa (1)" in text


def test_no_manifest_no_note(tmp_path):
    assert software_note(checkpoint_manifests([str(tmp_path)])) == ""
