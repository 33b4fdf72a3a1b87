"""Shared by the workflow tests: the tiny config, and Snakemake run on it in a scratch folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# Tiny jobs spend their time importing torch: one thread each, two at once on two cores
# (locally and on the test cluster alike, so their outputs can be compared bit for bit).
ONE_THREAD = ("--max-threads", "1")


def tiny_config(tmp: Path) -> dict:
    return {
        "models": {"tiny": {"source": str(tmp / "tiny-src"), "mem_mb": 1000, "runtime": 10}},
        "data": {"source": "mirror", "mirror": str(tmp / "mirror")},
        "calibration": {
            "wikitext2": {"dataset": "wikitext2", "split": "validation", "n_samples": 4, "seq_len": 16},
            "rand": {"dataset": "random", "n_samples": 4, "seq_len": 16},
            "selfgen": {"dataset": "selfgen", "n_samples": 4, "seq_len": 16},
            "grad": {"dataset": "wikitext2", "split": "validation", "n_samples": 2, "seq_len": 8, "seed": 42},
        },
        "methods": {
            "random": {"score": "random", "calib": "none", "options": {"seed": 0}},
            "l1": {"score": "l1", "calib": "none"},
            "l2": {"score": "l2", "calib": "none"},
            "ours": {"score": "distribution", "calib": "rand", "recover": True, "remedy": {"calib": "selfgen"},
                     "label": "Ours (SG)"},
            "wanda-sp": {"score": "wanda_sp", "calib": "wikitext2", "flow": "sequential"},
            "flap": {"score": "flap", "calib": "wikitext2", "heads": "kv_groups", "allocation": "global",
                     "reconstruct": "bias"},
            "llmp": {"score": "taylor", "calib": "grad", "options": {"variant": "element1"},
                     "heads": "kv_groups", "budget": "per_module", "layers": [0, 1]},
            "best": {"score": "distribution", "calib": "wikitext2", "heads": "kv_groups", "allocation": "global",
                     "select": {"heldout": "held", "grid": {"reconstruct": ["bias", "refit"], "damp": [0.01, 1.0]}}},
        },
        "heldout": {"held": {"fit": ["wikitext2"], "n_samples": 2, "seq_len": 16}},
        "sparsities": [20],
        "evaluation": {
            "perplexity": {"seq_len": 16, "max_tokens": 64},
            "tasks": ["piqa", "arc_easy"],
            "limit": 2,
            "batch_size": 2,
            "speed": {"repeats": 1, "new_tokens": 2, "prefill": [2, 16], "decode_batches": [1, 2]},
        },
    }


def snakemake(
    workdir: Path, *args: str, check: bool = True, snakefile: Path = REPO / "Snakefile", timeout: int = 1200,
    configfile: Path | None = None, path_first: Path | None = None,
) -> subprocess.CompletedProcess:
    """Snakemake on `workdir` with its config.yaml (or `configfile`); fails the test on an error.
    `path_first`: a folder put before everything on the jobs' PATH (to stand in for a command)."""
    cmd, env = snakemake_command(workdir, *args, snakefile=snakefile, configfile=configfile, path_first=path_first)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def snakemake_command(
    workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile", configfile: Path | None = None,
    path_first: Path | None = None,
) -> tuple[list[str], dict]:
    """The command line and environment of `snakemake` (see there)."""
    path = [str(path_first)] if path_first else []
    env = {**os.environ, "PATH": os.pathsep.join([*path, str(Path(sys.executable).parent), os.environ["PATH"]])}
    env.pop("STRUCTPRUNE_DATA_MIRROR", None)
    if "--workflow-profile" not in args:  # not the repository's default profile: each test says what it runs with
        args = ("--workflow-profile", "none", *args)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
           "--directory", str(workdir), "--configfile", str(configfile or workdir / "config.yaml"), "--cores", "2", *args]
    return cmd, env


def planned_jobs(workdir: Path, **kwargs) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run would execute."""
    out = snakemake(workdir, "--dry-run", **kwargs).stdout
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
