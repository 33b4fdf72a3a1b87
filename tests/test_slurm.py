"""The workflow on a real SLURM cluster through profiles/slurm.

Needs a running cluster that `sinfo` reaches (CI starts a one-node cluster on localhost with
tests/cluster/start-slurm.sh, see .ci/run). Skipped without one, unless
STRUCTPRUNE_REQUIRE_SLURM=1 (CI sets it), where a missing cluster fails the test.
"""

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
from safetensors.torch import load_file
from workflow_helpers import ONE_THREAD, REPO, snakemake, write_config

from structprune.io.artifacts import read_json

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]
PROFILE = REPO / "profiles" / "slurm"
# The committed profile, made quick for a one-node test cluster: first status check after 1 s
# (the cluster's MinJobAge of 300 s keeps squeue's answers), keep the SLURM logs to inspect.
TEST_CLUSTER = ("--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", "--latency-wait", "5")


def eval_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in (root / "results").rglob("*.json")
                  if p.name == "eval.json" or p.parent.name == "eval")


def cluster_is_up() -> bool:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return result.returncode == 0 and any(s.startswith(("idle", "mix", "alloc")) for s in result.stdout.split())


@pytest.fixture(scope="module")
def cluster():
    if not cluster_is_up():
        message = "no SLURM cluster reachable (run tests/cluster/start-slurm.sh and export SLURM_CONF)"
        if os.environ.get("STRUCTPRUNE_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)


def cluster_config(full: dict) -> dict:
    """The distribution-aware method with recovery, out of the finished local run's config:
    every stage (data: random ids and selfgen, calibrate, score, prune with and without the
    paper's remedy, evaluate, report), few jobs."""
    config = yaml.safe_load(yaml.safe_dump(full))
    config["methods"] = {"ours": config["methods"]["ours"]}
    config["calibration"] = {name: config["calibration"][name] for name in ("rand", "selfgen")}
    config.pop("heldout", None)  # held-out sets serve `select` rows only, and they fit on wikitext2
    return config


@pytest.fixture(scope="module")
def runs(cluster, finished_run, tmp_path_factory):
    local, full = finished_run
    config = cluster_config(full)
    workdir = tmp_path_factory.mktemp("slurm") / "cluster"
    workdir.mkdir()
    write_config(workdir, config)
    result = snakemake(workdir, "--workflow-profile", str(PROFILE), *TEST_CLUSTER, *ONE_THREAD, timeout=1500)
    return local, workdir, config, result


def test_every_job_went_through_sbatch(runs):
    _, workdir, _, result = runs
    text = result.stdout + result.stderr
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", text)
    total = int(re.search(r"^total\s+(\d+)$", text, re.M).group(1))
    assert len(submitted) == total - 1  # all but the target rule `all`, which has no command
    assert len({slurm_id for _, slurm_id in submitted}) == len(submitted)
    slurm_logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert len(slurm_logs) == len(submitted)


def test_cluster_outputs_equal_the_local_run(runs):
    local, cluster_dir, _, _ = runs
    evals = eval_files(cluster_dir)
    assert len(evals) == 3  # dense, ours pruned and recovered
    for name in evals:
        ours, theirs = read_json(cluster_dir / name), read_json(local / name)
        for key in ("perplexity", "zero_shot", "parameters", "protocol"):
            assert ours[key] == theirs[key], (name, key)
    for name in ["results/tiny/calib/rand/stats.safetensors", "results/tiny/rand/ours/scores.safetensors",
                 "results/tiny/rand/ours/s20/pruned/model.safetensors",
                 "results/tiny/rand/ours/s20/recovered/model.safetensors"]:
        ours, theirs = load_file(str(cluster_dir / name)), load_file(str(local / name))
        assert ours.keys() == theirs.keys()
        assert all(ours[k].equal(theirs[k]) for k in ours), name
    from structprune.report.tables import MEASURED_COLUMNS

    def deterministic(frame):  # speed figures are measurements: they differ between any two runs; the best
        # peer depends on which rows a table has (this one has no peers)
        return frame[[c for c in frame.columns
                      if c not in MEASURED_COLUMNS and not c.startswith("Decode x") and "best peer" not in c]]

    table, reference = (deterministic(pd.read_csv(d / "results/tables/tiny.csv")) for d in (cluster_dir, local))
    reference = reference[reference["Method"].isin(["dense", "Ours (SG)", "Ours (SG) w/ remedy"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(table, reference)


def failing_evaluations(folder: Path) -> Path:
    """A `python` that dies in `structprune evaluate` (as a job on a bad node would) and runs
    everything else with this interpreter: the jobs find it first on their PATH."""
    folder.mkdir()
    wrapper = folder / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" structprune "*" evaluate "*) echo "injected failure: this evaluation job dies" >&2; exit 3;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return folder


def test_a_failing_job_is_reported_and_nothing_else_is_lost(runs, tmp_path):
    _, workdir, config, _ = runs
    kept = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*.safetensors")}
    rescored = {**config, "evaluation": {**config["evaluation"], "perplexity": {
        **config["evaluation"]["perplexity"], "max_tokens": 32}}}
    write_config(workdir, rescored)  # a new protocol: every evaluation reruns, and each one dies
    try:
        result = snakemake(workdir, "--workflow-profile", str(PROFILE), *TEST_CLUSTER, *ONE_THREAD, check=False,
                           timeout=900, path_first=failing_evaluations(tmp_path / "bin"))
    finally:
        write_config(workdir, config)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule evaluate" in text and "injected failure: this evaluation job dies" in text  # its log is shown
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # statistics, scores, checkpoints untouched
    assert eval_files(workdir) == []  # failed evaluations left no file behind, half-written or stale
