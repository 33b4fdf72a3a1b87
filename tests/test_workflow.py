"""The whole DAG on a tiny random model in a temporary folder, and what reruns after a change."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tiny import save_tiny_checkpoint, tiny_mirror

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


def tiny_config(tmp: Path) -> dict:
    return {
        "models": {"tiny": {"source": str(tmp / "tiny-src"), "mem_mb": 1000, "runtime": 10}},
        "data": {"source": "mirror", "mirror": str(tmp / "mirror")},
        "calibration": {
            "wikitext2": {"dataset": "wikitext2", "split": "validation", "n_samples": 4, "seq_len": 16},
            "selfgen": {"dataset": "selfgen", "n_samples": 4, "seq_len": 16},
            "grad": {"dataset": "wikitext2", "split": "validation", "n_samples": 2, "seq_len": 8, "seed": 42},
        },
        "methods": {
            "random": {"score": "random", "calib": "none", "options": {"seed": 0}},
            "l1": {"score": "l1", "calib": "none"},
            "l2": {"score": "l2", "calib": "none"},
            "ours": {"score": "distribution", "calib": "selfgen", "recover": True},
            "wanda-sp": {"score": "wanda_sp", "calib": "wikitext2", "flow": "sequential"},
            "flap": {"score": "flap", "calib": "wikitext2",
                     "plan": {"structure": "global", "heads": "kv_groups", "compensate": True}},
            "llmp": {"score": "taylor", "calib": "grad", "options": {"variant": "element1"},
                     "plan": {"heads": "kv_groups", "layers": [0, 1]}},
        },
        "sparsities": [20],
        "evaluation": {
            "perplexity": {"seq_len": 16, "max_tokens": 64},
            "tasks": ["piqa", "arc_easy"],
            "limit": 2,
            "batch_size": 2,
        },
    }


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("STRUCTPRUNE_DATA_MIRROR", None)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(workdir: Path) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run would execute."""
    out = snakemake(workdir, "--dry-run").stdout
    jobs, rule = set(), None
    for line in out.splitlines():
        if m := re.match(r"^rule (\w+):", line.strip()):
            rule = m.group(1)
            jobs.add((rule, ""))
        elif rule and (m := re.match(r"^wildcards: (.*)$", line.strip())):
            jobs.discard((rule, ""))
            jobs.add((rule, m.group(1)))
    return {j for j in jobs if j[0] != "all"}


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workflow")
    save_tiny_checkpoint(tmp / "tiny-src")
    tiny_mirror(tmp / "mirror")
    workdir = tmp / "run"
    workdir.mkdir()
    config = tiny_config(tmp)
    write_config(workdir, config)
    snakemake(workdir)
    return workdir, config


def test_whole_dag_produces_the_comparison_table(finished_run):
    workdir, _ = finished_run
    table = pd.read_csv(workdir / "results/tables/tiny.csv")
    assert list(table["Method"]) == ["dense", "random", "l1", "l2", "ours", "ours", "wanda-sp", "flap", "llmp"]
    assert list(table["Stage"]) == ["dense"] + ["pruned"] * 4 + ["recovered"] + ["pruned"] * 3
    assert list(table["Calibration"]) == ["none"] * 4 + ["selfgen"] * 2 + ["wikitext2"] * 2 + ["grad"]
    assert set(table["Sparsity (%)"]) == {0, 20}
    assert table["WikiText2"].notna().all() and table["PIQA"].notna().all()
    removed = table.loc[1:, "Block params removed (%)"]
    assert ((removed > 12) & (removed < 28)).all()  # coarse units on a tiny model (kv groups of 3 heads)
    assert (workdir / "results/plots/tiny.ppl.png").is_file()
    assert (workdir / "results/tiny/calib/wikitext2/stats.safetensors").is_file()
    for rule in ("model", "data", "calibrate", "gradients", "score", "prune", "recover", "evaluate", "report"):
        assert list((workdir / "logs" / rule).rglob("*.log")), rule
        assert list((workdir / "benchmarks" / rule).rglob("*.tsv")), rule
    assert planned_jobs(workdir) == set()  # nothing left to do


def test_adding_a_sparsity_adds_only_its_jobs(finished_run):
    workdir, config = finished_run
    write_config(workdir, {**config, "sparsities": [20, 40]})
    try:
        jobs = planned_jobs(workdir)
    finally:
        write_config(workdir, config)
    rules = sorted(rule for rule, _ in jobs)
    assert rules == ["evaluate"] * 8 + ["prune"] * 4 + ["prune_planned"] * 3 + ["recover", "report"]
    assert all("sparsity=40" in wc for rule, wc in jobs if rule != "report")


def test_changing_an_evaluation_limit_reruns_only_evaluation_and_report(finished_run):
    workdir, config = finished_run
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed["evaluation"]["limit"] = 3
    write_config(workdir, changed)
    try:
        rules = sorted(rule for rule, _ in planned_jobs(workdir))
    finally:
        write_config(workdir, config)
    assert rules == ["evaluate"] * 8 + ["evaluate_dense", "report"]


def test_changing_one_method_reruns_only_that_method(finished_run):
    workdir, config = finished_run
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed["methods"]["random"]["options"]["seed"] = 1
    write_config(workdir, changed)
    try:
        jobs = planned_jobs(workdir)
    finally:
        write_config(workdir, config)
    assert sorted(rule for rule, _ in jobs) == ["evaluate", "prune", "report", "score"]
    assert all("method=random" in wc for rule, wc in jobs if rule != "report")


def test_changing_the_calibration_set_reruns_only_methods_that_use_it(finished_run):
    workdir, config = finished_run
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed["calibration"]["selfgen"]["n_samples"] = 5
    write_config(workdir, changed)
    try:
        jobs = planned_jobs(workdir)
    finally:
        write_config(workdir, config)
    rules = sorted(rule for rule, _ in jobs)
    assert rules == ["calibrate", "data_calib", "evaluate", "evaluate", "prune", "recover", "report", "score"]
    assert all("calib=selfgen" in wc for rule, wc in jobs if rule != "report")


def test_a_bad_config_fails_before_any_job_naming_the_key(finished_run, tmp_path):
    _, config = finished_run
    bad = yaml.safe_load(yaml.safe_dump(config))
    bad["evaluation"]["limit"] = "many"
    bad["methods"]["l1"]["calib"] = "c4"
    bad["methods"]["flap"]["plan"]["heads"] = "within_kv_groups"
    write_config(tmp_path, bad)
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "evaluation.limit" in text and "methods.l1.calib" in text and "methods.flap.plan.heads" in text
    assert not (tmp_path / "results").exists()
