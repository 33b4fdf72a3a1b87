"""The whole DAG on a tiny random model in a temporary folder (the `finished_run` fixture in
conftest.py), and what reruns after a change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import ONE_THREAD, REPO, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow


def jobs_after_change(workdir: Path, config: dict, key: list[str], value) -> set[tuple[str, str]]:
    """The jobs a dry run plans once config[key[0]][key[1]]... is set to `value`; the config is restored."""
    changed = yaml.safe_load(yaml.safe_dump(config))
    *parents, last = key
    node = changed
    for name in parents:
        node = node[name]
    node[last] = value
    write_config(workdir, changed)
    try:
        return planned_jobs(workdir)
    finally:
        write_config(workdir, config)


def test_whole_dag_produces_the_comparison_table(finished_run):
    workdir, _ = finished_run
    table = pd.read_csv(workdir / "results/tables/tiny.csv")
    assert list(table["Method"]) == ["dense", "random", "l1", "l2", "Ours (SG)", "Ours (SG) w/ remedy", "wanda-sp", "flap", "llmp", "best"]
    assert list(table["Stage"]) == ["dense"] + ["pruned"] * 4 + ["recovered"] + ["pruned"] * 4
    assert list(table["Calibration"]) == ["none"] * 4 + ["rand", "rand + selfgen (recovery)"] + ["wikitext2"] * 2 + ["grad", "wikitext2"]
    assert set(table["Sparsity (%)"]) == {0, 20}
    assert table["WikiText2"].notna().all() and table["PIQA"].notna().all()
    removed = table.loc[1:, "Block params removed (%)"]
    assert ((removed > 12) & (removed < 28)).all()  # coarse units on a tiny model (kv groups of 3 heads)
    assert (workdir / "results/plots/tiny.ppl.png").is_file()
    assert (workdir / "results/tiny/calib/wikitext2/stats.safetensors").is_file()
    manifest = yaml.safe_load((workdir / "results/tiny/rand/ours/s20/recovered/manifest.json").read_text())
    assert manifest["parameters"]["recipe"]["reconstruct"] == "paper" and manifest["parameters"]["recipe"]["flow"] == "sequential"
    assert manifest["inputs"]["data"]["path"].endswith("calib/selfgen.safetensors")
    assert manifest["inputs"]["dense_stream"]["path"] == "results/tiny/calib/selfgen/dense"  # recorded once, read
    assert "dense_stream " in (workdir / "results/tables/tiny.md").read_text()  # its time counts in the header
    assert "No checkpoint was exported in this run" in (workdir / "results/tables/tiny.gguf.md").read_text()  # export off
    for rule in ("model", "data", "calibrate", "dense_stream", "gradients", "score", "prune", "select", "evaluate", "report"):
        assert list((workdir / "logs" / rule).rglob("*.log")), rule
        assert list((workdir / "benchmarks" / rule).rglob("*.tsv")), rule
    assert planned_jobs(workdir) == set()  # nothing left to do


def test_adding_a_sparsity_adds_only_its_jobs(finished_run):
    workdir, config = finished_run
    jobs = jobs_after_change(workdir, config, ["sparsities"], [20, 40])
    rules = sorted(rule for rule, _ in jobs)
    assert rules == ["evaluate"] * 9 + ["prune"] * 8 + ["report", "select"] + ["speed"] * 9  # the dense streams are reused
    assert all("sparsity=40" in wc for rule, wc in jobs if rule != "report")


def test_task_sparsities_give_other_sparsities_perplexity_only(finished_run, tmp_path):
    workdir, config = finished_run
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed["sparsities"] = [20, 40]
    changed["evaluation"]["task_sparsities"] = [20]
    write_config(workdir, changed)
    try:
        out = snakemake(workdir, "--dry-run", "--printshellcmds").stdout
    finally:
        write_config(workdir, config)
    evaluations = [line for line in out.splitlines() if "structprune" in line and " evaluate " in line]
    at40 = [line for line in evaluations if "--sparsity 40" in line]
    assert len(at40) == 9 and not any("--task" in line for line in at40)


def test_select_at_one_sparsity_reuses_the_choice_and_speed_runs_where_asked(finished_run):
    """select.at: 20 and speed.sparsities: [20]: adding 40 % plans a select job that runs the
    choice made at 20 % (the finished 20 % checkpoint is its input, not rerun) and no speed job."""
    workdir, config = finished_run
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed["sparsities"] = [20, 40]
    changed["methods"]["best"]["select"]["at"] = 20
    changed["evaluation"]["speed"]["sparsities"] = [20]
    write_config(workdir, changed)
    try:
        out = snakemake(workdir, "--dry-run", "--printshellcmds").stdout
        jobs = planned_jobs(workdir)
        changed["methods"]["best"]["select"]["rechoose"] = ["damp"]  # damp chosen again at 40 %
        write_config(workdir, changed)
        rechosen = snakemake(workdir, "--dry-run", "--printshellcmds").stdout
    finally:
        write_config(workdir, config)
    selects = [line for line in out.splitlines() if "python -m structprune" in line and " select --model " in line]
    assert len(selects) == 2, selects  # 20 % reruns: its settings now name `at`
    at40 = [line for line in selects if "--sparsity 40" in line]
    assert len(at40) == 1 and "--chosen-in results/tiny/wikitext2/best/s20/pruned" in at40[0]
    assert "--rechoose" not in at40[0]
    assert any("--sparsity 40" in line and "--rechoose damp" in line for line in rechosen.splitlines())
    assert not any(rule == "speed" and "sparsity=40" in wc for rule, wc in jobs)
    assert any(rule == "evaluate" and "sparsity=40" in wc for rule, wc in jobs)


def test_select_keeps_the_lowest_heldout_loss_and_reports_every_candidate(finished_run):
    workdir, _ = finished_run
    manifest = yaml.safe_load((workdir / "results/tiny/wikitext2/best/s20/pruned/manifest.json").read_text())
    candidates = manifest["candidates"]
    assert len(candidates) == 4 and sum(c["chosen"] for c in candidates) == 1
    chosen = next(c for c in candidates if c["chosen"])
    assert chosen["heldout_loss"] == min(c["heldout_loss"] for c in candidates)
    assert manifest["inputs"]["heldout"]["path"].endswith("heldout/held.safetensors")
    held = yaml.safe_load((workdir / "resources/data/tiny/heldout/held.json").read_text())
    assert held["heldout_from"] == ["resources/data/tiny/calib/wikitext2.safetensors"] and len(held["starts"]) == 2
    selection = pd.read_csv(workdir / "results/tables/tiny.selection.csv")
    assert len(selection) == 4 and (selection["Chosen"] == "yes").sum() == 1
    assert selection.loc[selection["Chosen"] == "yes", "Held-out loss"].iloc[0] == pytest.approx(chosen["heldout_loss"], abs=1e-4)


def test_changing_an_evaluation_limit_reruns_only_evaluation_and_report(finished_run):
    workdir, config = finished_run
    rules = sorted(rule for rule, _ in jobs_after_change(workdir, config, ["evaluation", "limit"], 3))
    assert rules == ["evaluate"] * 9 + ["evaluate_dense", "report"]


def test_changing_one_method_reruns_only_that_method(finished_run):
    workdir, config = finished_run
    jobs = jobs_after_change(workdir, config, ["methods", "random", "options", "seed"], 1)
    assert sorted(rule for rule, _ in jobs) == ["evaluate", "prune", "report", "score", "speed"]
    assert all("method=random" in wc for rule, wc in jobs if rule != "report")


def test_changing_the_calibration_set_reruns_only_methods_that_use_it(finished_run):
    workdir, config = finished_run
    jobs = jobs_after_change(workdir, config, ["calibration", "selfgen", "n_samples"], 5)
    rules = sorted(rule for rule, _ in jobs)
    # selfgen only feeds the remedy of `ours` (and its dense stream)
    assert rules == ["data_calib", "dense_stream", "evaluate", "prune", "report", "speed"]
    assert all("stage=recovered" in wc for rule, wc in jobs if rule in ("evaluate", "prune", "speed"))


def test_a_bad_config_fails_before_any_job_naming_the_key(finished_run, tmp_path):
    _, config = finished_run
    bad = yaml.safe_load(yaml.safe_dump(config))
    bad["evaluation"]["limit"] = "many"
    bad["sparsities"] = [0, 20]
    bad["methods"]["l1"]["calib"] = "c4"
    write_config(tmp_path, bad)
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "evaluation.limit" in text and "'many'" in text
    assert "sparsities.0: 0 is less than the minimum of 1" in text
    fixed = yaml.safe_load(yaml.safe_dump(config))
    fixed["methods"]["l1"]["calib"] = "c4"
    fixed["methods"]["flap"]["heads"] = "within_kv_groups"
    fixed["methods"]["llmp"]["flow"] = "sequential"
    fixed["methods"]["random"]["options"] = {"sed": 0}
    fixed["evaluation"]["perplexity"]["seq_len"] = 128  # longer than max_tokens (64)
    fixed["evaluation"]["task_sparsities"] = [30]
    fixed["methods"]["best"]["select"]["grid"]["options.sed"] = [1]
    fixed["methods"]["best"]["select"]["grid"]["colour"] = ["red"]
    fixed["methods"]["ours"]["select"] = {"heldout": "nowhere", "grid": {"damp": [0.1]}}
    fixed["methods"]["flap"]["select"] = {"heldout": "held", "samples": "grad", "grid": {"damp": [0.1]}}
    fixed["heldout"]["bad"] = {"fit": ["rand"]}
    fixed["heldout"]["mixed"] = {"fit": ["wikitext2", "selfgen"]}
    fixed["heldout"]["ghost"] = {"fit": ["c5"]}
    write_config(tmp_path, fixed)
    result = snakemake(tmp_path, "--dry-run", check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "methods.l1: calib: 'c4'" in text
    assert "methods.flap: allocation 'global'" in text and "set heads: kv_groups" in text
    assert "methods.llmp: score 'taylor' reads backprop saliencies" in text
    assert "methods.random: options.sed: score 'random' has no such option (known: ['seed'])" in text
    assert "128-token windows do not fit in max_tokens 64" in text
    assert "evaluation.task_sparsities: [30] are not in sparsities" in text
    assert "methods.best: select.grid.options.sed: score 'distribution' has no such option" in text
    assert "methods.best: select.grid.colour: not a recipe choice" in text
    assert "methods.ours: select: chooses the pruned stage's reconstruction itself; set recover: false" in text
    assert "methods.ours: select.heldout: 'nowhere' is not a key of heldout" in text
    assert "heldout.bad.fit: random token ids have no held-out text" in text
    assert "methods.flap: select.heldout: held-out set 'held' is not kept apart from ['grad']" in text
    assert "heldout.mixed.fit: the fit sets come from different text" in text
    assert "heldout.ghost.fit: ['c5'] are not keys of calibration" in text
    assert not (tmp_path / "results").exists()


def test_changing_the_calibration_sample_count_spares_the_data_free_methods(finished_run):
    workdir, config = finished_run
    jobs = jobs_after_change(workdir, config, ["calibration", "wikitext2", "n_samples"], 5)
    rules = sorted(rule for rule, _ in jobs)
    # FLAP scores and compensates from the statistics; Wanda-sp prunes sequentially from the samples
    assert rules == ["calibrate", "data_calib", "data_heldout", "dense_stream", "evaluate", "evaluate", "evaluate", "prune",
                     "prune", "report", "score", "select", "speed", "speed", "speed"]  # best: its held-out windows avoid the new fit windows
    assert not any(f"method={m}" in wc for _, wc in jobs for m in ("random", "l1", "l2", "ours", "llmp"))


def copy_of_the_workflow(tmp: Path) -> Path:
    """Snakefile, rules and library sources in a scratch folder, so a test can edit the code."""
    copy = tmp / "checkout"
    copy.mkdir()
    shutil.copy(REPO / "Snakefile", copy / "Snakefile")
    shutil.copytree(REPO / "workflow", copy / "workflow")
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return copy


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("report/tables.py", {"report"}),
        ("evaluation/zeroshot.py", {"evaluate", "evaluate_dense", "report"}),  # tables reads main_accuracy
        ("calibration/statistics.py", None),
    ],
)
def test_editing_library_code_reruns_the_stages_that_use_it(finished_run, tmp_path, module, expected):
    workdir, _ = finished_run
    copy = copy_of_the_workflow(tmp_path)
    assert planned_jobs(workdir, snakefile=copy / "Snakefile") == set()  # same code, nothing to do
    with open(copy / "src" / "structprune" / module, "a") as f:
        f.write("\n\ndef _a_new_helper():\n    return 1\n")
    rules = {rule for rule, _ in planned_jobs(workdir, snakefile=copy / "Snakefile")}
    if expected is not None:
        assert rules == expected
    else:  # calibration feeds statistics, the layer-wise stages and everything after them
        assert {"calibrate", "prune", "evaluate", "report"} <= rules
        assert not rules & {"model", "data_eval", "data_task", "evaluate_dense"}


def test_report_html_has_the_tables_plots_and_runtimes(finished_run, tmp_path):
    workdir, _ = finished_run
    for ext in ("csv", "md", "tex", "html"):
        assert (workdir / f"results/tables/tiny.{ext}").is_file(), ext
    assert "\\begin{tabular}" in (workdir / "results/tables/tiny.tex").read_text()
    report = tmp_path / "report.html"
    snakemake(workdir, "--report", str(report))
    page = report.read_text()
    assert len(page) > 100_000  # one self-contained file: data and scripts embedded
    for text in ("Comparison tables", "Perplexity vs sparsity", "tiny.ppl.png", "tiny.html", "runtime"):
        assert text in page, text


def test_a_damaged_intermediate_is_rebuilt_by_the_next_run_with_what_reads_it(finished_run, tmp_path):
    from structprune.io.integrity import checkpoint_problem, safetensors_problem

    workdir, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy, symlinks=True)  # keeps mtimes and Snakemake's metadata
    stats = copy / "results/tiny/calib/rand/stats.safetensors"
    stats.write_bytes(stats.read_bytes()[:-10])
    weights = copy / "results/tiny/none/l1/s20/pruned/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    stray = copy / "results/tiny/none/gone/s20/pruned"  # a method no longer in the config
    shutil.copytree(weights.parent, stray)
    jobs = planned_jobs(copy)
    assert ("calibrate", "model=tiny, calib=rand") in jobs
    assert ("prune", "model=tiny, calib=none, method=l1, sparsity=20, stage=pruned") in jobs
    assert ("evaluate", "model=tiny, calib=none, method=l1, sparsity=20, stage=pruned") in jobs
    assert not any("method=l2" in wildcards for _, wildcards in jobs)  # nothing that reads neither
    dry = snakemake(copy, "--dry-run")
    text = dry.stdout + dry.stderr
    assert "results/tiny/calib/rand/stats.safetensors is damaged" in text and "this run rebuilds it" in text
    assert "results/tiny/none/gone/s20/pruned is damaged" in text and "no job of this config writes it" in text
    snakemake(copy, *ONE_THREAD)
    assert safetensors_problem(stats) is None and checkpoint_problem(weights.parent) is None
    assert checkpoint_problem(stray) is not None  # left alone: not ours to rebuild or delete
    assert planned_jobs(copy) == set()


def test_model_limits_are_checked_once_the_model_is_built(finished_run):
    workdir, config = finished_run
    model_config = yaml.safe_load((workdir / "resources/models/tiny/config.json").read_text())
    bad = yaml.safe_load(yaml.safe_dump(config))
    bad["calibration"]["selfgen"]["start_token"] = model_config["vocab_size"]
    bad["calibration"]["wikitext2"]["seq_len"] = model_config["max_position_embeddings"] + 1
    bad["methods"]["llmp"]["layers"] = [0, model_config["num_hidden_layers"] + 1]
    write_config(workdir, bad)
    try:
        result = snakemake(workdir, "--dry-run", check=False)
    finally:
        write_config(workdir, config)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"calibration.selfgen.start_token: {model_config['vocab_size']} is outside model tiny's vocabulary" in text
    assert f"calibration.wikitext2.seq_len: {model_config['max_position_embeddings'] + 1}-token windows exceed" in text
    assert f"methods.llmp.layers: [0, {model_config['num_hidden_layers'] + 1}) goes past model tiny's" in text


@pytest.mark.parametrize("method, key, value", [
    ("flap", "reconstruct", "none"),
    ("flap", "allocation", "uniform"),
    ("llmp", "layers", [0, 2]),
    ("llmp", "budget", "matched"),
    ("wanda-sp", "heads", "kv_groups"),
    ("wanda-sp", "flow", "dense"),
])
def test_changing_a_recipe_choice_reruns_that_methods_prune_and_evaluation_only(finished_run, method, key, value):
    workdir, config = finished_run
    jobs = jobs_after_change(workdir, config, ["methods", method, key], value)
    assert {rule for rule, _ in jobs} <= {"prune", "evaluate", "report", "score", "speed"}
    assert {rule for rule, _ in jobs} >= {"prune", "evaluate", "report"}
    assert all(f"method={method}," in wc + "," for rule, wc in jobs if rule != "report")


def comparable_outputs(workdir: Path) -> dict[str, bytes]:
    """Every data file, statistics file, score file, checkpoint file and evaluation JSON of a
    run, JSON without its "timing" (measured seconds and throughputs, which no two runs share)
    and without the seal that covers them (content_sha256)."""
    import json

    found = {}
    for top in ("resources", "results/tiny"):
        for path in sorted((workdir / top).rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                if path.suffix == ".json" and path.name != "config.json":
                    payload = json.loads(data)
                    if isinstance(payload, dict):
                        payload.pop("timing", None)
                        payload.pop("content_sha256", None)
                    data = json.dumps(payload, sort_keys=True).encode()
                found[path.relative_to(workdir).as_posix()] = data
    return found


def stage_processes(session: int, stage: str) -> list[int]:
    """PIDs of `python -m structprune <stage>` processes in a session (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            sid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])  # state, ppid, pgrp, session
        except (OSError, ValueError, IndexError):
            continue
        if sid == session and b"structprune" in args and stage.encode() in args:
            found.append(int(entry.name))
    return found


def test_jobs_killed_with_sigkill_then_a_plain_rerun_give_byte_identical_outputs(finished_run, tmp_path):
    """kill -9 of a calibrate job, then (next run) of a prune job, then of an evaluate job; the
    run around each carries on with what does not need it and fails; the next plain
    `snakemake` (the default profile) reruns what was lost, and the last one finishes with
    exactly the bytes of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import time

    from workflow_helpers import snakemake_command

    workdir, config = finished_run
    run = tmp_path / "run"
    run.mkdir()
    write_config(run, config)
    default_profile = ("--workflow-profile", str(REPO / "profiles" / "default"), *ONE_THREAD)
    for stage in ("calibrate", "prune", "evaluate"):
        cmd, env = snakemake_command(run, *default_profile)
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        deadline, victims = time.time() + 600, []
        while not victims and time.time() < deadline and process.poll() is None:
            time.sleep(0.1)
            victims = stage_processes(process.pid, stage)
        assert victims, f"no {stage} job ran"
        time.sleep(0.5)  # into the job: loading torch and the model, or computing
        os.kill(victims[0], signal.SIGKILL)
        _, err = process.communicate(timeout=1200)
        assert process.returncode != 0 and "Error in rule " + stage in err
    snakemake(run, *default_profile)
    assert comparable_outputs(run) == comparable_outputs(workdir)
    leftovers = [p for p in (run / "results").rglob(".*") if p.name != ".snakemake_timestamp"]  # Snakemake's own
    assert leftovers == []  # no temporary of a killed writer survives
    assert planned_jobs(run) == set()
