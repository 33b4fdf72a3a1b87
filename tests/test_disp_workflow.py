"""DISP-LLM as a config entry (issue #32): validated before any job, searched by its own rule,
evaluated and timed like every row, with no GGUF export and the table saying why."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tiny import save_tiny_checkpoint, tiny_mirror
from workflow_helpers import ONE_THREAD, planned_jobs, snakemake, tiny_config, write_config

from structprune.spec.configcheck import ConfigError, validate_config

DISP = {"score": "disp", "unit": "channels", "calib": "wikitext2", "layers": "all", "label": "DISP-LLM",
        "search": {"steps": 4, "batch_size": 2, "save_every": 2}}


def disp_config(tmp_path, **change) -> dict:
    cfg = tiny_config(tmp_path)
    cfg["methods"] = {"disp": {**DISP, **change}, "l2": cfg["methods"]["l2"]}
    cfg.pop("heldout")
    return cfg


@pytest.mark.parametrize(("change", "message"), [
    ({"search": None}, "DISP-LLM needs a search section with its steps"),
    ({"unit": "width"}, "set unit: channels"),
    ({"reconstruct": "refit"}, "set reconstruct: none"),
    ({"recover": True}, "has no recovered stage: set recover: false"),
    ({"options": {"seed": 1}}, "go in its search section"),
    ({"search": {"steps": 0}}, "methods.disp.search.steps"),
])
def test_a_disp_entry_that_cannot_run_is_refused_with_the_fix(tmp_path, change, message):
    cfg = disp_config(tmp_path, **change)
    if change.get("search", 1) is None:
        del cfg["methods"]["disp"]["search"]
    with pytest.raises(ConfigError, match="(?s)" + message.replace(".", r"\.")):
        validate_config(cfg)


def test_a_search_section_belongs_to_disp_alone(tmp_path):
    cfg = disp_config(tmp_path)
    cfg["methods"]["l2"]["search"] = {"steps": 3}
    with pytest.raises(ConfigError, match="only a searched method"):
        validate_config(cfg)


def test_the_prune_command_sends_disp_to_its_own_stage(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "structprune", "prune", "--model", str(tmp_path), "--method", "disp",
                          "--unit", "channels", "--sparsity", "20", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "run `python -m structprune disp-search`" in out.stderr


def test_a_disp_row_is_planned_without_a_gguf_export_and_the_table_says_why(tmp_path):
    save_tiny_checkpoint(tmp_path / "tiny-src")
    tiny_mirror(tmp_path / "mirror")
    (workdir := tmp_path / "run").mkdir()
    cfg = disp_config(tmp_path)
    cfg["models"]["tiny"]["gguf_tokenizer_pre"] = "llama-bpe"
    cfg["export"] = {"enabled": True}
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir)
    rules = {rule for rule, _ in jobs}
    assert {"disp_search", "export", "evaluate_gguf", "speed"} <= rules and "calibrate" not in rules  # samples, not moments
    for rule in ("export", "evaluate_gguf"):
        planned = {w for r, w in jobs if r == rule}
        assert planned and all("method=l2" in w for w in planned), planned  # nothing of the DISP row in llama.cpp
    assert any("method=disp" in w for r, w in jobs if r == "speed")  # timed in transformers
    out = snakemake(workdir, "--dry-run", "--printshellcmds").stdout
    report = next(line for line in out.splitlines() if " report " in line)
    assert "No GGUF export of DISP-LLM: its layers read and write their own residual channels (index add)" in report
    assert "learned by a hypernetwork in 4 steps of 2 windows, lambda 16" in report and "weights frozen" in report


def test_a_disp_row_is_searched_evaluated_and_timed(tmp_path):
    save_tiny_checkpoint(tmp_path / "tiny-src")
    tiny_mirror(tmp_path / "mirror")
    (workdir := tmp_path / "run").mkdir()
    write_config(workdir, disp_config(tmp_path))
    snakemake(workdir, *ONE_THREAD)
    base = workdir / "results" / "tiny" / "wikitext2" / "disp" / "s20"
    manifest = json.loads((base / "pruned" / "manifest.json").read_text())
    assert manifest["stage"] == "disp-search" and len(manifest["history"]) == 4
    assert not (base / "pruned.search.pt").exists()  # the search state goes once the checkpoint is written
    evaluation = json.loads((base / "eval" / "pruned.json").read_text())
    # the row's parameter count holds the checkpoint's channel indices, as the search's manifest counts them
    assert manifest["index_entries"] > 0
    dense_blocks = manifest["dense_parameters"]["decoder_blocks"]
    assert evaluation["parameters"]["decoder_blocks"] == round(dense_blocks * (1 - manifest["achieved_block_sparsity"]))
    table = pd.read_csv(workdir / "results" / "tables" / "tiny.csv")
    row = table[table["Method"] == "DISP-LLM"].iloc[0]
    assert row["Block params"] == evaluation["parameters"]["decoder_blocks"]
    assert not pd.isna(row["Prefill x"])  # timed in transformers
    assert "disp at 20 %" in (workdir / "results" / "tables" / "tiny.md").read_text()  # the search's cost in the header
