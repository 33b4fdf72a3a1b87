"""The committed benchmark configs resolve into the expected DAG (dry runs: nothing is downloaded)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from tiny import save_tiny_checkpoint
from workflow_helpers import REPO, snakemake

pytestmark = pytest.mark.workflow


def dry_run(config: str, workdir: Path) -> str:
    return snakemake(workdir, "--dry-run", configfile=REPO / config, timeout=600).stdout


def job_counts(out: str) -> Counter:
    table = out[out.index("Job stats:"):]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"})


def jobs(out: str) -> list[dict]:
    """Each job of a dry run: rule, wildcards and resources."""
    found = []
    for block in re.split(r"\n(?=rule \w+:)", out):
        if m := re.match(r"rule (\w+):", block):
            wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", (re.search(r"wildcards: (.*)", block) or [None, ""])[1]))
            resources = dict(re.findall(r"(\w+)=([^,\s]+)", (re.search(r"resources: (.*)", block) or [None, ""])[1]))
            found.append({"rule": m.group(1), "wildcards": wildcards, "resources": resources})
    return found


def test_paper_config_has_one_job_per_method_stage_and_shared_statistics(tmp_path):
    counts = job_counts(dry_run("config/paper.yaml", tmp_path))
    # 13 rows: 4 data-free, Wanda-sp, FLAP, 3 LLM-Pruner, ours-sg and ours-c each with and
    # without remedy; five calibration sets, each sampled once and shared by its methods.
    assert counts == {
        "model": 1, "data_eval": 2, "data_task": 7, "data_calib": 5,
        "calibrate": 3,         # moments of the sets a moment score reads: wikitext2 (FLAP), wikitext2-16, random
        "gradients": 1,
        "score": 10,            # every method whose pruned stage reads dense scores (not Wanda-sp, sequential)
        "prune": 13,            # one rule for every method and stage
        "evaluate": 13, "evaluate_dense": 1, "report": 1, "all": 1,
        "speed": 13,            # every checkpoint's speed and memory beside the dense model
    }


def test_sweep_config_scales_jobs_and_resources_with_models_and_sparsities(tmp_path):
    out = dry_run("config/sweep.yaml", tmp_path)
    counts = job_counts(out)
    models, sparsities = 3, 5
    assert counts["score"] == models * 6  # scores do not depend on sparsity: shared by all five
    assert counts["data_calib"] == models * 4 and counts["calibrate"] == models * 3
    assert counts["prune"] == models * 9 * sparsities  # 7 methods, 2 of them also w/ remedy
    assert counts["evaluate"] == models * 9 * sparsities and counts["report"] == models
    recover = {j["wildcards"]["model"]: j["resources"] for j in jobs(out)
               if j["rule"] == "prune" and j["wildcards"]["stage"] == "recovered"}
    assert recover["llama-3-8b"]["gpu"] == "1" and recover["smollm2-135m"]["gpu"] == "0"
    assert int(recover["llama-3-8b"]["mem_mb"]) > 8 * int(recover["smollm2-135m"]["mem_mb"])
    scores = [j for j in jobs(out) if j["rule"] == "score"]
    assert all(j["resources"]["gpu"] == "0" for j in scores)  # weight-only work stays on the host


def test_a_yaml_slip_in_config_yaml_names_its_line_and_column(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "config.yaml").write_text("models:\n  x: {source: a\nmethods: [\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "--cores", "1", "--dry-run"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "config file config.yaml, line 3, column 8" in result.stdout + result.stderr


@pytest.mark.parametrize("config", ["config/paper.yaml", "config/sweep.yaml"])
def test_plain_snakemake_in_the_repository_root_reads_the_default_profile_and_only_the_named_config(config, tmp_path):
    """From the repository root, without --cores or --profile: profiles/default supplies the
    cores, and --configfile replaces config.yaml: the same jobs as in an empty folder (for the
    paper's config, no SmolLM2 job and no default method)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("STRUCTPRUNE_DATA_MIRROR", None)
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--forceall", "--configfile", config],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "workflow specific profile profiles/default" in result.stderr
    assert job_counts(result.stdout) == job_counts(dry_run(config, tmp_path))
    if config == "config/paper.yaml":
        planned = jobs(result.stdout)
        assert {j["wildcards"].get("model") for j in planned if j["rule"] not in ("all", "data_task")} == {"llama-7b"}


def readme_job_counts() -> dict[str, int]:
    """{config: jobs} from the README's "Configurations" table (its `snakemake -n` column)."""
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+\.yaml)` \|.*\| (\d+) \|$", text, re.M)
    return {config: int(count) for config, count in rows}


def test_the_readme_states_the_job_counts_snakemake_plans(tmp_path):
    stated = readme_job_counts()
    assert set(stated) == {"config.yaml", "config/benchmark.yaml", "config/ablations.yaml", "config/disp-llm.yaml",
                           "config/frontier.yaml", "config/design.yaml", "config/paper.yaml", "config/sweep.yaml",
                           "config/schedules.yaml", "config/full.yaml"}
    for config, count in stated.items():
        (workdir := tmp_path / config.replace("/", "-")).mkdir()
        planned = sum(job_counts(dry_run(config, workdir)).values())
        assert planned == count, f"README says {config} plans {count} jobs; snakemake -n plans {planned}"


def test_a_changed_recover_damp_changes_only_the_commands_of_jobs_that_refit_with_it(tmp_path):
    """Every recipe used to carry the damping, so a new recover.damp reran every prune and
    select (19 jobs instead of the 1 whose refit reads it: issue #26)."""
    import yaml
    from tiny import tiny_mirror
    from workflow_helpers import tiny_config

    commands = []
    for damp in (0.01, 0.5):
        cfg = tiny_config(tmp_path)
        save_tiny_checkpoint(tmp_path / "tiny-src")  # planning checks the source exists
        cfg["data"]["mirror"] = str(tiny_mirror(tmp_path / "mirror"))
        cfg["recover"] = {"damp": damp}
        (workdir := tmp_path / f"damp-{damp}").mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        out = snakemake(workdir, "--dry-run", "--printshellcmds", "--forceall").stdout
        commands.append({line for line in out.splitlines() if line.startswith("Shell command: ")})
    changed = {re.search(r" (prune|select|report) .*--(?:out|csv) (\S+)", line).groups() for line in commands[0] ^ commands[1]}
    # the one refit that reads recover.damp, and the report, whose recipe text names the damping
    assert changed == {("prune", "results/tiny/rand/ours/s20/recovered"), ("report", "results/tables/tiny.csv")}, changed


def test_window_and_item_choices_reach_only_the_evaluation_commands_and_the_note(tmp_path):
    """evaluation.perplexity.windows and evaluation.items (issue #29) are passed to evaluate and
    evaluate-gguf (transformers and llama.cpp score the same windows); nothing else reruns."""
    import yaml
    from tiny import tiny_mirror
    from workflow_helpers import tiny_config

    commands = []
    for name, perplexity, evaluation in (("first", {"windows": "first"}, {"items": "first"}),
                                         ("spread", {}, {"items_seed": 7})):  # the defaults
        cfg = tiny_config(tmp_path)
        save_tiny_checkpoint(tmp_path / "tiny-src")  # planning checks the source exists
        cfg["data"]["mirror"] = str(tiny_mirror(tmp_path / "mirror"))
        cfg["models"]["tiny"]["gguf_tokenizer_pre"] = "llama-bpe"
        cfg["export"] = {"enabled": True}
        cfg["evaluation"]["perplexity"].update(perplexity)
        cfg["evaluation"].update(evaluation)
        (workdir := tmp_path / name).mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        out = snakemake(workdir, "--dry-run", "--printshellcmds", "--forceall").stdout
        commands.append({line for line in out.splitlines() if line.startswith("Shell command: ")})
    first, spread = commands
    command = r"structprune (?:--threads \d+ )?(?:--device \S+ --dtype \S+ )?([\w-]+)"
    stage = lambda line: (found := re.search(command, line)) and found.group(1)  # None: rule all's empty command
    assert {stage(line) for line in first ^ spread} == {"evaluate", "evaluate-gguf", "report"}
    evaluations = [line for line in spread if stage(line) == "evaluate"]
    assert len(evaluations) == 10  # the dense model and 9 checkpoints
    assert all("--max-tokens 64 --windows spread" in line and "--limit 2 --items random --items-seed 7" in line
               for line in evaluations)
    assert all("--max-tokens 64 --windows first" in line and "--limit 2 --items first" in line
               and "--items-seed" not in line for line in first if stage(line) == "evaluate")
    gguf = [line for line in spread if stage(line) == "evaluate-gguf"]
    assert gguf and all("--max-tokens 64 --windows spread" in line and "--items" not in line for line in gguf)


def test_a_speed_job_takes_every_core_while_its_measurement_runs_on_the_configured_threads(tmp_path):
    """Issue #34: other jobs running beside a measurement moved the ratios by more than the
    methods differ, so the speed job holds all of Snakemake's cores (here 2) and measures on
    evaluation.speed.threads (here 1); the other jobs keep their own threads."""
    import yaml
    from tiny import tiny_mirror
    from workflow_helpers import tiny_config

    cfg = tiny_config(tmp_path)
    save_tiny_checkpoint(tmp_path / "tiny-src")  # planning checks the source exists
    cfg["data"]["mirror"] = str(tiny_mirror(tmp_path / "mirror"))
    cfg["evaluation"]["speed"]["threads"] = 1
    (workdir := tmp_path / "run").mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(workdir, "--dry-run", "--printshellcmds", "--forceall").stdout
    blocks = [block for block in re.split(r"\n(?=rule \w+:)", out) if block.startswith("rule speed:")]
    assert blocks and all(re.search(r"^\s*threads: 2$", block, re.M) for block in blocks)
    assert all("structprune --threads 1 " in block and " speed --model " in block for block in blocks)
    evaluations = [block for block in re.split(r"\n(?=rule \w+:)", out) if block.startswith("rule evaluate:")]
    assert evaluations and not any(re.search(r"^\s*threads: 2$", block, re.M) for block in evaluations)


def test_an_empty_mapping_in_a_config_file_is_a_choice_not_a_merge_error(tmp_path):
    """`heldout: {}` in a --configfile (no held-out sets) plans; only an empty --config override,
    which Snakemake would merge as nothing, is refused."""
    from workflow_helpers import tiny_config, write_config

    cfg = tiny_config(tmp_path)
    from tiny import tiny_mirror

    save_tiny_checkpoint(tmp_path / "tiny-src")  # planning checks the source exists
    tiny_mirror(tmp_path / "mirror")
    cfg["methods"].pop("best")  # the only method that reads a held-out set
    cfg["heldout"] = {}
    (work := tmp_path / "work").mkdir()
    write_config(work, cfg)
    snakemake(work, "--dry-run")
    refused = snakemake(work, "--dry-run", "--config", "methods={}", check=False)
    assert refused.returncode != 0 and "an override merges" in refused.stdout + refused.stderr


def test_a_named_config_keeps_its_own_tables_and_shares_every_other_job(tmp_path):
    """config.yaml (name: quick) and config/benchmark.yaml share the model key, so their common
    jobs are one cache; the name moves only the report's files (results/tables/<model>.<name>.*)."""
    import yaml
    from tiny import tiny_mirror
    from workflow_helpers import tiny_config

    commands = []
    for name in (None, "quick"):
        cfg = tiny_config(tmp_path)
        save_tiny_checkpoint(tmp_path / "tiny-src")  # planning checks the source exists
        cfg["data"]["mirror"] = str(tiny_mirror(tmp_path / "mirror"))
        if name:
            cfg["name"] = name
        (workdir := tmp_path / (name or "unnamed")).mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        out = snakemake(workdir, "--dry-run", "--printshellcmds", "--forceall").stdout
        commands.append({line for line in out.splitlines() if line.startswith("Shell command: ")})
    unnamed, quick = commands
    differ = unnamed ^ quick
    assert differ and all(" report " in line for line in differ), differ  # every other job is the same job
    report = next(line for line in quick if " report " in line)
    assert "--csv results/tables/tiny.quick.csv" in report and "results/plots/tiny.quick.ppl.png" in report
    assert "--run-record results/runs/tiny.quick.json" in report and "--model-name tiny.quick" in report
    assert "logs/report/tiny.quick.log" in report
    assert "Regenerate with `snakemake --configfile config.yaml`" in report  # the config that made it, no checkout path
