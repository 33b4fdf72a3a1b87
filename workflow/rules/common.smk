# Schema validation (with defaults), wildcard constraints, target lists and input functions.
import json
import os
import re
import shlex
from pathlib import Path

import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import update_config

# Jobs run this checkout's library (`python -m structprune` resolves to src/ first), so the code
# fingerprints below describe the code that actually runs, and a conda env (--sdm conda) needs
# only the dependencies. Jobs on cluster nodes re-parse this file and get the same setting.
SRC = Path(workflow.basedir) / "src"
os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
sys.path.insert(0, str(SRC))  # the stdlib-only fingerprint module, importable without installing
from structprune.spec.codeversion import stage_code_version
from structprune.spec.configcheck import (
    GRADIENT_SCORES, STAGES, ConfigError, model_family_problems, model_limit_problems, row_label, select_candidates, stage_calib, stage_recipe,
    text_size_problems, validate_config,
)
from structprune.spec.configfile import ConfigFileError, typed_overrides
from structprune.spec.recipe import StatisticsNeeds, recipe_problems, statistics_needs
from structprune.spec.resources import memory_mb as job_memory_mb, runtime_minutes as job_runtime_minutes

REPO = Path(workflow.basedir)
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MIRROR_ENV = "STRUCTPRUNE_DATA_MIRROR"


try:  # --config's numbers inside lists and mappings arrive as strings: read them as a file would
    update_config(config, typed_overrides(workflow.config_settings.overwrite_config or {}))
    validate_config(config, SCHEMA)
except (ConfigError, ConfigFileError) as error:
    raise WorkflowError(str(error)) from None
_limits = model_family_problems(config) + model_limit_problems(config)
if _limits:
    raise WorkflowError("invalid configuration for this model (fix config.yaml or your --configfile):\n"
                        + "\n".join(_limits))


def data_mirror():
    """The mirror folder to read data from, or None for the Hugging Face Hub."""
    data = config["data"]
    mirror = os.environ.get(MIRROR_ENV) or data["mirror"]
    path = (REPO / mirror).resolve() if mirror else None
    if data["source"] == "hub":
        return None
    if path is not None and path.is_dir():
        return str(path)
    if data["source"] == "mirror":
        raise WorkflowError(
            f"data.source is 'mirror' but the mirror folder {path} does not exist: "
            f"set data.mirror in config.yaml or {MIRROR_ENV}, or use data.source: hub"
        )
    if path is not None:
        logger.warning(
            f"structprune: data mirror {path} does not exist; reading data from the Hugging Face Hub "
            f"(data.source: auto). Set data.mirror or {MIRROR_ENV}, or data.source: hub to silence this."
        )
    return None


def config_artifacts():
    """Every tensor file, checkpoint folder and evaluation JSON the config's jobs write (paths
    relative to the working directory): the damaged ones among them are rebuilt."""
    found = set()
    for model in config["models"]:
        found.add(f"resources/models/{model}")
        found.update(f"resources/data/{model}/eval/{d}.safetensors" for d in config["evaluation"]["perplexity"]["datasets"])
        found.update(f"resources/data/{model}/calib/{c}.safetensors" for c in config["calibration"])
        found.update(f"resources/data/{model}/heldout/{h}.safetensors" for h in config["heldout"])
        found.update(f"results/{model}/calib/{c}/{kind}.safetensors" for c in config["calibration"]
                     for kind in ("stats", "gradients"))
        found.update(dense_stream_dir(model, c) for c in config["calibration"])
        found.update(f"resources/data/tasks/{t}.jsonl" for t in config["evaluation"]["tasks"])
        for calib, method, sparsity, stage in method_rows(model):
            found.add(f"results/{model}/{calib}/{method}/scores.safetensors")
            found.add(f"results/{model}/{calib}/{method}/s{sparsity}/{stage}")
        found.update(model_evals(model), model_speeds(model), model_exports(model), model_gguf_evals(model))
    return found


def rebuild_damaged_artifacts():
    """Before planning, in the main process: every damaged artifact (truncated safetensors,
    unparsable config or evaluation JSON) that this config's jobs write is forced to rerun,
    and with it everything that reads it (Snakemake 9 would not rerun a job for a damaged or
    missing intermediate whose consumers are up to date); a damaged file no job of this
    config writes is named and left alone."""
    from structprune.io.integrity import damaged_artifacts

    ours = config_artifacts()
    forced = set()
    for path, problem in damaged_artifacts(Path.cwd()):
        rel = str(path.relative_to(Path.cwd()))
        if rel in ours:
            logger.warning(f"structprune: {rel} is damaged ({problem}); this run rebuilds it and what depends on it")
            forced.add(rel)
        else:
            logger.warning(f"structprune: {rel} is damaged ({problem}) and no job of this config writes it; "
                           f"delete it, or run with the config that made it")
    if forced:
        force_rerun(forced)


def force_rerun(paths):
    """Add `paths` to --forcerun. Snakemake 9 sets the DAG settings only after it has parsed
    this file, so the addition is made as the DAG is prepared (a wrapper around the
    workflow's `_prepare_dag`, private API: tests/test_workflow.py checks it on the pinned
    Snakemake); without that hook, the paths are named with the command that rebuilds them."""
    def add(settings):
        settings.forcerun = set(settings.forcerun) | set(paths)

    if workflow.dag_settings is not None:
        add(workflow.dag_settings)
        return
    prepare = getattr(workflow, "_prepare_dag", None)
    if prepare is None:
        logger.warning("structprune: this Snakemake cannot be told to rebuild damaged files; run "
                       f"`snakemake --forcerun {' '.join(sorted(paths))}`")
        return

    def prepare_rebuilding_damaged(*args, **kwargs):
        add(workflow.dag_settings)
        return prepare(*args, **kwargs)

    workflow._prepare_dag = prepare_rebuilding_damaged


def sh(*words):
    """Words as one shell-quoted string (shlex, as Snakemake's `:q`): every config string reaches
    a command line through here, so `$(...)`, quotes and spaces stay one literal argument.
    Paths built from names need none: names match NAME_PATTERN (schema and wildcards)."""
    return shlex.join(str(w) for w in words)


MIRROR = data_mirror()
MIRROR_WORDS = ["--mirror", MIRROR] if MIRROR else []
MIRROR_ARG = sh(*MIRROR_WORDS)
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # the schema's: no leading dot or dash, no shell character
_sizes = text_size_problems(config, MIRROR)
if _sizes:
    raise WorkflowError("invalid configuration (fix config.yaml or the --configfile/--config you passed):\n" + "\n".join(_sizes))


wildcard_constraints:
    model=NAME_PATTERN,
    calib=NAME_PATTERN,
    method=NAME_PATTERN,
    sparsity=r"\d+",
    dataset=r"[A-Za-z0-9_]+",
    task=r"[A-Za-z0-9_]+",


# --------------------------------------------------------------------------- lookups

def model_cfg(wildcards):
    return config["models"][wildcards.model]


def method_cfg(wildcards):
    return config["methods"][wildcards.method]


# ---------------------------------------------------------------- compute and resources

# Requests per stage come from structprune.spec.resources: host memory from the stage benchmark
# (results/bench/llama7b-width*.json) where it runs the stage, else from the embedded model's
# Snakemake benchmarks; a profile's set-resources or a model's mem_mb/runtime override them.
GPU_STAGES = {"data_calib", "calibrate", "dense_stream", "gradients", "prune", "select", "evaluate", "speed"}


def model_compute(model):
    """(device, dtype) of a model's jobs: the model's own settings over the compute section."""
    m, compute = config["models"][model], config["compute"]
    return m.get("device") or compute["device"], m.get("dtype") or compute["dtype"]


def compute_args(wildcards):
    device, dtype = model_compute(wildcards.model)
    return sh("--device", device, "--dtype", dtype)


def parameter_count(model):
    """models.<m>.n_params as a number: YAML reads 6.7e9 as a string, and 135M / 6.7B read well."""
    value = config["models"][model]["n_params"]
    if value is None or isinstance(value, (int, float)):
        return value
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(value[-1], 1)
    return float(value[:-1] if scale != 1 else value) * scale


def _on_gpu(model):
    return model_compute(model)[0] == "cuda"


def _weights_dtype(model):
    device, dtype = model_compute(model)
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"  # auto device: count float32 (safe)
    return dtype


def job_tokens(stage, wildcards):
    """Calibration tokens a job streams through the layers: the set its samples come from (a
    recovery's remedy set, a select's samples), else its calibration set's; 0 without one."""
    name = getattr(wildcards, "calib", None)
    method = config["methods"].get(getattr(wildcards, "method", None) or "")
    if method and stage == "prune":
        name = stage_calib(method, wildcards.stage)
    elif method and stage == "select":
        name = select_samples(method)
    c = config["calibration"].get(name or "")
    return int(c["n_samples"]) * int(c["seq_len"]) if c else 0


def stage_resources(stage):
    """mem_mb, runtime (minutes) and gpu of a stage's jobs, scaled with the model they run on."""

    def mem_mb(wildcards, attempt):
        m = config["models"][wildcards.model]
        if m["mem_mb"] or not m["n_params"]:
            return (m["mem_mb"] or 8000) * attempt
        return job_memory_mb(stage, parameter_count(wildcards.model), _weights_dtype(wildcards.model),
                             tokens=job_tokens(stage, wildcards), on_gpu=_on_gpu(wildcards.model)) * attempt

    def runtime(wildcards, attempt):
        m = config["models"][wildcards.model]
        if m["runtime"] or not m["n_params"]:
            return (m["runtime"] or 120) * attempt
        return job_runtime_minutes(stage, parameter_count(wildcards.model), _on_gpu(wildcards.model)) * attempt

    def gpu(wildcards):
        return int(stage in GPU_STAGES and _on_gpu(wildcards.model))

    return {"mem_mb": mem_mb, "runtime": runtime, "gpu": gpu}


def code_version(command):
    """Fingerprint of the library code behind `python -m structprune <command>` (a params
    entry, so that editing a function a stage uses reruns that stage)."""
    return stage_code_version(command, REPO / "src" / "structprune")


def sparsity_fraction(wildcards):
    return int(wildcards.sparsity) / 100.0


def method_options(wildcards):
    """--option NAME=VALUE for each method option, so params triggers see every change."""
    return sh(*method_option_words(method_cfg(wildcards)["options"]))


def method_option_words(options):
    return [w for key, value in sorted(options.items()) for w in ("--option", f"{key}={value}")]


def statistics_file(model, calib, score):
    """The calibration statistics a score reads: activation moments, or backprop saliencies."""
    kind = "gradients" if score in GRADIENT_SCORES else "stats"
    return f"results/{model}/calib/{calib}/{kind}.safetensors"


def calib_statistics_args(calib):
    """What the calibrate stage keeps for a calibration set: the full moments and attention
    divergences the scores of the methods calibrated on it read (every select candidate's
    options included); means and diagonals always."""
    needs = StatisticsNeeds()
    for m in config["methods"].values():
        if m["calib"] != calib:
            continue
        recipes = [r for _, r in select_candidates(config, m)] if m.get("select") else [stage_recipe(config, m, "pruned")]
        for recipe in recipes:
            needs = needs.union(statistics_needs(recipe.score, recipe.options))
    return sh("--full-sites", *sorted(needs.full_sites), *([] if needs.attention_js else ["--no-attention-js"]))


def score_inputs(wildcards):
    inputs = {"model": f"resources/models/{wildcards.model}"}
    if wildcards.calib != "none":
        inputs["stats"] = statistics_file(wildcards.model, wildcards.calib, method_cfg(wildcards)["score"])
    return inputs


def wildcard_recipe(wildcards):
    return stage_recipe(config, method_cfg(wildcards), wildcards.stage)


def prune_inputs(wildcards):
    """What a stage's recipe reads: dense scores, dense statistics (bias compensation in the
    dense flow), calibration samples (sequential flow or a refit)."""
    m, model, recipe = method_cfg(wildcards), wildcards.model, wildcard_recipe(wildcards)
    inputs = {"model": f"resources/models/{model}"}
    if recipe.reads_score_file:
        inputs["scores"] = f"results/{model}/{wildcards.calib}/{wildcards.method}/scores.safetensors"
    if recipe.needs_dense_moments:
        inputs["stats"] = f"results/{model}/calib/{m['calib']}/stats.safetensors"
    if recipe.needs_samples:
        inputs["samples"] = f"resources/data/{model}/calib/{stage_calib(m, wildcards.stage)}.safetensors"
    if (dense := dense_stream_set(m, wildcards.stage)) is not None:
        inputs["dense"] = dense_stream_dir(model, dense)
    return inputs


def dense_stream_dir(model, calib):
    return f"results/{model}/calib/{calib}/dense"


def refits_read_dense_stream(recipes):
    """Whether jobs running `recipes` read the cached dense stream (recover.dense_cache) rather
    than run the dense layers themselves: any of them refits."""
    return config["recover"]["dense_cache"] and any(r.refits for r in recipes)


def dense_stream_set(m, stage):
    """The calibration set whose recorded dense stream the prune or select job of method `m`
    at `stage` reads, or None: the set its samples come from, when a recipe it runs refits."""
    if m.get("select"):
        return select_samples(m) if refits_read_dense_stream(runnable_candidates(m)) else None
    return stage_calib(m, stage) if refits_read_dense_stream([stage_recipe(config, m, stage)]) else None


def recipe_words(recipe, settings):
    """A recipe as command-line words of `prune` and `select`: the fields in `settings` (the
    damping and refit target only where they change what runs: Recipe.settings)."""
    layers = recipe.layers if isinstance(recipe.layers, str) else "{}:{}".format(*recipe.layers)
    words = ["--method", recipe.score, *method_option_words(recipe.options),
             "--heads", recipe.heads, "--allocation", recipe.allocation, "--budget", recipe.budget, "--layers", layers,
             "--sparsity-of", recipe.sparsity_of, "--flow", recipe.flow, "--reconstruct", recipe.reconstruct]
    words += ["--damp", recipe.damp] if "damp" in settings else []
    words += ["--target", recipe.target] if "target" in settings else []
    return words + ["--round-to", recipe.round_to, "--batch-size", config["recover"]["batch_size"]]


def input_words(input, flags):
    """`--flag path` for each input key present ({key: flag})."""
    return [w for key, flag in flags.items() if key in input.keys() for w in (flag, input[key])]


def prune_args(wildcards, input):
    """The prune command's recipe and input arguments (every choice visible to rerun checks)."""
    recipe = wildcard_recipe(wildcards)
    return sh(*recipe_words(recipe, recipe.settings()),
              *input_words(input, {"scores": "--scores", "stats": "--stats", "samples": "--data", "dense": "--dense-stream"}))


def prune_settings(wildcards):
    """Every setting of a prune job as text: a params entry that needs no `input`, so that
    Snakemake's params-change check sees a changed recipe (issue #14)."""
    return str(sorted(wildcard_recipe(wildcards).settings().items())) + f" calib={stage_calib(method_cfg(wildcards), wildcards.stage)}"


def select_methods():
    return [name for name, m in config["methods"].items() if m.get("select")]


def select_method_pattern():
    """Wildcard constraint of the select rule: the methods with a select section (none: a
    pattern that matches nothing)."""
    names = select_methods()
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def select_samples(method):
    return method["select"].get("samples") or method["calib"]


def runnable_candidates(m):
    """The recipes of a select grid that the engine can run (the others are listed as skipped)."""
    return [r for _, r in select_candidates(config, m) if not recipe_problems(r)]


def select_inputs(wildcards):
    """The dense statistics (scores of every candidate, bias compensation), the samples
    candidates run through the layers, and the held-out set."""
    m, model = method_cfg(wildcards), wildcards.model
    inputs = {"model": f"resources/models/{model}", "heldout": f"resources/data/{model}/heldout/{m['select']['heldout']}.safetensors"}
    if m["calib"] != "none":
        inputs["stats"] = statistics_file(model, m["calib"], m["score"])
    if any(r.needs_samples for r in runnable_candidates(m)):
        inputs["samples"] = f"resources/data/{model}/calib/{select_samples(m)}.safetensors"
    if (dense := dense_stream_set(m, "pruned")) is not None:
        inputs["dense"] = dense_stream_dir(model, dense)
    at = m["select"].get("at")
    if at is not None and int(wildcards.sparsity) != at:  # run the candidate chosen at `at`
        inputs["chosen_in"] = f"results/{model}/{m['calib']}/{wildcards.method}/s{at}/pruned"
    return inputs


def select_base_settings(m):
    """The base recipe's fields that some runnable candidate reads: its damping and refit target
    only when a candidate refits and the grid does not set them itself."""
    base, grid, runnable = stage_recipe(config, m, "pruned"), m["select"]["grid"], runnable_candidates(m)
    settings = base.to_json()
    if "damp" in grid or not any(r.refits for r in runnable):
        settings.pop("damp")
    if "target" in grid or not any(r.reconstruct == "refit" for r in runnable):
        settings.pop("target")
    return settings


def select_args(wildcards, input):
    m = method_cfg(wildcards)
    sel = m["select"]
    words = recipe_words(stage_recipe(config, m, "pruned"), select_base_settings(m))
    words += [w for key, values in sel["grid"].items() for w in ("--grid", f"{key}={','.join(str(v) for v in values)}")]
    words += ["--heldout", input.heldout]
    words += input_words(input, {"stats": "--stats", "samples": "--data", "chosen_in": "--chosen-in"})
    if "chosen_in" in input.keys():
        words += [w for key in sel.get("rechoose", []) for w in ("--rechoose", key)]
    return sh(*words, *input_words(input, {"dense": "--dense-stream"}))


def select_settings(wildcards):
    """The base recipe, the grid and the data of a select job as text, for the params check."""
    m = method_cfg(wildcards)
    return (str(sorted(select_base_settings(m).items()))
            + f" grid={sorted(m['select']['grid'].items())} heldout={m['select']['heldout']} samples={select_samples(m)}"
            + f" at={m['select'].get('at')} rechoose={m['select'].get('rechoose', [])}")


def heldout_cfg(wildcards):
    return config["heldout"][wildcards.heldout]


def heldout_inputs(wildcards):
    fit = heldout_cfg(wildcards)["fit"]
    return {"model": f"resources/models/{wildcards.model}",
            "fit": [f"resources/data/{wildcards.model}/calib/{f}.safetensors" for f in fit]}


def heldout_source_args(wildcards):
    """The fit sets' text (or their self-generation settings), which the held-out set shares."""
    h = heldout_cfg(wildcards)
    c = config["calibration"][h["fit"][0]]
    if c["dataset"] == "selfgen":
        return sh("--dataset", "selfgen", *selfgen_words(c))
    return sh("--dataset", c["dataset"], "--split", c["split"], *MIRROR_WORDS)


def selfgen_words(c):
    """The sampling settings of a self-generated set."""
    start = ["--start-token", c["start_token"]] if c["start_token"] is not None else []
    return ["--temperature", c["temperature"], "--top-p", c["top_p"], *start, *(["--drop-start"] if c["drop_start"] else [])]


def method_label(name, stage):
    return row_label(config, name, stage)


def label_args(model):
    return sh(*[w for _, name, _, stage in method_rows(model) for w in ("--label", f"{name}:{stage}={method_label(name, stage)}")])


def eval_split(dataset):
    splits = config["evaluation"]["perplexity"]["splits"]
    if dataset not in splits:
        raise WorkflowError(f"evaluation.perplexity.splits has no split for {dataset!r}")
    return splits[dataset]


def calib_cfg(wildcards):
    return config["calibration"][wildcards.calib]


def calib_source_args(wildcards):
    """Where calibration samples come from: a text split, or the model itself (selfgen)."""
    c = calib_cfg(wildcards)
    if c["dataset"] == "random":
        return ""
    if c["dataset"] == "selfgen":
        return sh(*selfgen_words(c))
    return sh("--split", c["split"], *MIRROR_WORDS)


def stats_arg(wildcards, input):
    return sh(*input_words(input, {"stats": "--stats"}))


def eval_tasks(wildcards):
    """The zero-shot tasks of a checkpoint: all configured tasks, or none at a sparsity outside
    evaluation.task_sparsities (perplexity only; the dense model always gets them)."""
    at = config["evaluation"]["task_sparsities"]
    sparsity = getattr(wildcards, "sparsity", None)
    if at is not None and sparsity is not None and int(sparsity) not in at:
        return []
    return config["evaluation"]["tasks"]


def eval_inputs(wildcards):
    ppl = config["evaluation"]["perplexity"]["datasets"]
    return {
        **{f"ppl_{d}": f"resources/data/{wildcards.model}/eval/{d}.safetensors" for d in ppl},
        **{f"task_{t}": f"resources/data/tasks/{t}.jsonl" for t in eval_tasks(wildcards)},
    }


def eval_args(wildcards, input):
    """The data-dependent part of an evaluate command line (the tasks are inputs, so a changed
    task list reruns through the input trigger)."""
    ppl = [w for d in config["evaluation"]["perplexity"]["datasets"] for w in ("--ppl", f"{d}={input['ppl_' + d]}")]
    return sh(*ppl, *[w for t in eval_tasks(wildcards) for w in ("--task", f"{t}={input['task_' + t]}")])


def eval_protocol_args():
    ev = config["evaluation"]
    return sh(*ppl_protocol_words(), "--batch-size", ev["batch_size"], *(["--limit", ev["limit"]] if ev["limit"] else []))


def gguf_ppl_inputs(wildcards):
    """The perplexity streams the GGUF check reads (export.perplexity; no task items)."""
    return {f"ppl_{d}": f"resources/data/{wildcards.model}/eval/{d}.safetensors" for d in config["export"]["perplexity"]}


def gguf_ppl_args(wildcards, input):
    return sh(*[w for d in config["export"]["perplexity"] for w in ("--ppl", f"{d}={input['ppl_' + d]}")])


def ppl_protocol_words():
    ppl = config["evaluation"]["perplexity"]
    return ["--seq-len", ppl["seq_len"], *(["--max-tokens", ppl["max_tokens"]] if ppl["max_tokens"] else [])]


def ppl_protocol_args():
    return sh(*ppl_protocol_words())


def export_args(wildcards):
    """Tensor type and tokenizer source of a model's GGUF exports: a GGUF source's tokenizer is
    copied; other sources need the model's `gguf_tokenizer_pre` (llama.cpp's pre-tokenizer)."""
    m = config["models"][wildcards.model]
    pre = ["--tokenizer-pre", m["gguf_tokenizer_pre"]] if m["gguf_tokenizer_pre"] else []  # configcheck requires it for a source that is not GGUF
    return sh("--type", config["export"]["type"], "--source", m["source"], *pre)


def speed_gguf_inputs(wildcards):
    """The checkpoint's and the dense model's exports, timed in llama.cpp by the speed job."""
    if not config["export"]["enabled"]:
        return {}
    base = f"results/{wildcards.model}/{wildcards.calib}/{wildcards.method}/s{wildcards.sparsity}"
    return {"gguf": f"{base}/gguf/{wildcards.stage}.gguf", "dense_gguf": f"results/{wildcards.model}/dense/gguf/model.gguf"}


def speed_gguf_args(wildcards, input):
    return sh(*input_words(input, {"gguf": "--gguf", "dense_gguf": "--dense-gguf"}))


def speed_protocol_args():
    sp = config["evaluation"]["speed"]
    return sh("--repeats", sp["repeats"], "--new-tokens", sp["new_tokens"], "--prefill", *sp["prefill"],
              "--decode-batches", *sp["decode_batches"], "--llamacpp-new-tokens", sp["llamacpp_new_tokens"],
              "--llamacpp-repeats", sp["llamacpp_repeats"])


# --------------------------------------------------------------------------- targets

def method_rows(model):
    """(calib, method, sparsity, stage) of every checkpoint the config asks for, by sparsity
    (the table's order)."""
    return [
        (m["calib"], name, s, stage)
        for s in sorted(config["sparsities"])
        for name, m in config["methods"].items()
        for stage in (STAGES if m["recover"] else STAGES[:1])
    ]


def selection_rows(model):
    """(method, sparsity, checkpoint) of every select checkpoint (the selection table)."""
    return [(name, s, f"results/{model}/{calib}/{name}/s{s}/{stage}")
            for calib, name, s, stage in method_rows(model) if config["methods"][name].get("select")]


def model_selections(wildcards):
    return [path for _, _, path in selection_rows(wildcards.model)]


def model_evals(wildcards_or_model):
    model = getattr(wildcards_or_model, "model", wildcards_or_model)
    evals = [f"results/{model}/dense/eval.json"]
    evals += [
        f"results/{model}/{calib}/{method}/s{sparsity}/eval/{stage}.json"
        for calib, method, sparsity, stage in method_rows(model)
    ]
    return evals


def speed_sparsities():
    """Sparsities whose checkpoints are measured: evaluation.speed.sparsities, else the task
    sparsities, else all (none when evaluation.speed is off)."""
    sp, ev = config["evaluation"]["speed"], config["evaluation"]
    if not sp["enabled"]:
        return set()
    return set(sp["sparsities"] or ev["task_sparsities"] or config["sparsities"])


def model_speeds(wildcards_or_model):
    """Speed measurements of the checkpoints at the speed sparsities."""
    model, measured = getattr(wildcards_or_model, "model", wildcards_or_model), speed_sparsities()
    return [f"results/{model}/{calib}/{method}/s{sparsity}/speed/{stage}.json"
            for calib, method, sparsity, stage in method_rows(model) if sparsity in measured]


def model_exports(wildcards_or_model):
    """Every checkpoint's GGUF export (and the dense model's), when export is enabled."""
    model = getattr(wildcards_or_model, "model", wildcards_or_model)
    if not config["export"]["enabled"]:
        return []
    return [f"results/{model}/dense/gguf/model.json"] + [
        f"results/{model}/{calib}/{method}/s{sparsity}/gguf/{stage}.json" for calib, method, sparsity, stage in method_rows(model)]


def model_gguf_evals(wildcards_or_model):
    """llama.cpp perplexity of the exports at the speed sparsities (and of the dense export)."""
    model, measured = getattr(wildcards_or_model, "model", wildcards_or_model), speed_sparsities()
    if not config["export"]["enabled"]:
        return []
    return [f"results/{model}/dense/eval/gguf.json"] + [
        f"results/{model}/{calib}/{method}/s{sparsity}/eval/{stage}.gguf.json"
        for calib, method, sparsity, stage in method_rows(model) if sparsity in measured]


def model_benchmarks(wildcards):
    """Benchmark files of the jobs behind a model's table (for the compute-time summary)."""
    model = wildcards.model
    files = [f"benchmarks/model/{model}.tsv", f"benchmarks/evaluate/{model}/dense.tsv"]
    if config["export"]["enabled"]:
        files += [f"benchmarks/export/{model}/dense.tsv", f"benchmarks/evaluate_gguf/{model}/dense.tsv"]
    calibs, dense_sets, measured = [], [], speed_sparsities()
    for calib, method, sparsity, stage in method_rows(model):
        m = config["methods"][method]
        recipe = stage_recipe(config, m, stage)
        if (dense := dense_stream_set(m, stage)) is not None:
            dense_sets.append(dense)
        if recipe.reads_score_file and not m.get("select"):  # select scores every candidate itself
            files.append(f"benchmarks/score/{model}/{calib}/{method}.tsv")
        if m["score"] in GRADIENT_SCORES:
            files.append(f"benchmarks/gradients/{model}/{calib}.tsv")
        if m.get("select"):
            files.append(f"benchmarks/select/{model}/{calib}/{method}/s{sparsity}.tsv")
            files.append(f"benchmarks/data/{model}/heldout/{m['select']['heldout']}.tsv")
            calibs += [select_samples(m), *config["heldout"][m["select"]["heldout"]]["fit"]]
        else:
            files.append(f"benchmarks/prune/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv")
        files.append(f"benchmarks/evaluate/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv")
        if sparsity in measured:
            files.append(f"benchmarks/speed/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv")
            if config["export"]["enabled"]:
                files.append(f"benchmarks/evaluate_gguf/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv")
        if config["export"]["enabled"]:
            files.append(f"benchmarks/export/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv")
        calibs += [calib, stage_calib(m, stage)]
    for calib in [c for c in dict.fromkeys(calibs) if c != "none"]:  # ordered: params must be stable
        files.append(f"benchmarks/data/{model}/calib/{calib}.tsv")
        if any(config["methods"][n]["calib"] == calib and config["methods"][n]["score"] not in GRADIENT_SCORES
               for n in config["methods"]):
            files.append(f"benchmarks/calibrate/{model}/{calib}.tsv")
    files += [f"benchmarks/dense_stream/{model}/{calib}.tsv" for calib in dict.fromkeys(dense_sets)]
    return sorted(set(files), key=files.index)


def all_targets():
    targets = expand("results/tables/{model}{table}.md", model=config["models"], table=["", ".selection"])
    targets += expand("results/plots/{model}.ppl.png", model=config["models"])
    targets += expand("results/runs/{model}.json", model=config["models"])  # not committed: a fresh clone reruns
    return targets


def protocol_layers():
    layers = config["prune"]["layers"]
    if layers == "protocol":
        return ("[4, L-2) (the first 4 and the last 2 stay dense, as the paper and LLM-Pruner; a model of fewer than "
                "12 layers: [round(L/8), L - round(L/16)))")
    return "all" if layers == "all" else "[{}, {})".format(*layers)


def recipe_summary(name, stage):
    m = config["methods"][name]
    r = stage_recipe(config, m, stage)
    allocation = "global" if (r.allocation, r.budget) == ("global", "matched") else f"{r.allocation}/{r.budget}"
    if r.round_to > 1:
        allocation += f", kept neurons a multiple of {r.round_to}"
    layers = r.layers if isinstance(r.layers, str) else "[{}, {})".format(*r.layers)
    options = ",".join(f"{k}={v}" for k, v in sorted(r.options.items()))
    damp = f" damp {r.damp}" if r.refits else ""
    target = f" target {r.target}" if r.reconstruct == "refit" else ""
    summary = (f"{method_label(name, stage)}: {r.score}{'(' + options + ')' if options else ''}; {r.heads}; {allocation}; "
               f"{layers}; {r.flow}; {r.reconstruct}{damp}{target}; {stage_calib(m, stage)}")
    if m.get("select"):
        sel = m["select"]
        grid = ", ".join(f"{k} in {{{', '.join(str(v) for v in vs)}}}" for k, vs in sel["grid"].items())
        when = "per sparsity" if sel.get("at") is None else f"once at {sel['at']} % and used at every sparsity"
        if sel.get("rechoose"):  # config validation: only with `at`
            when += f", {', '.join(sel['rechoose'])} chosen again at each"
        summary += (f" (base recipe; {grid} chosen {when} by the loss on held-out set {sel['heldout']}, "
                    f"samples {select_samples(m)}: see the selection table)")
    return summary


def calib_source_text(c):
    if c["dataset"] == "selfgen":
        return f"self-generated text (T={c['temperature']}, top-p={c['top_p']}{', start token dropped' if c['drop_start'] else ''})"
    if c["dataset"] == "random":
        return "uniform random token ids"
    return f"{c['dataset']} {c['split']}"


def table_note(model):
    """The protocol line printed under each table's title: what the numbers mean and how they were made."""
    ev, ppl = config["evaluation"], config["evaluation"]["perplexity"]
    configured = os.environ.get(MIRROR_ENV) or config["data"]["mirror"]  # as written: no checkout path in params
    source = f"mirror `{configured}`" if MIRROR else "Hugging Face Hub"
    tokens = f"first {ppl['max_tokens']} tokens" if ppl["max_tokens"] else "whole split"
    limit = f"first {ev['limit']} items per task" if ev["limit"] else "all items"
    calib = "; ".join(
        f"{name}: {c['n_samples']}x{c['seq_len']} tokens of "
        + calib_source_text(c)
        + f" (seed {c['seed']})"
        for name, c in config["calibration"].items()
    ) or "none"
    return (
        f"Model source `{config['models'][model]['source']}`; data from the {source}. "
        f"Perplexity (LLM-Pruner protocol): "
        + ", ".join(f"{d} {eval_split(d)}" for d in ppl["datasets"])
        + f" split, rows joined with blank lines, non-overlapping {ppl['seq_len']}-token windows, {tokens}. "
        f"Zero-shot: lm-eval builtin prompts, {limit}; accuracy is acc_norm where lm-eval reports it "
        f"(PIQA, HellaSwag, ARC-e, ARC-c, OBQA), else acc (BoolQ, WinoGrande), in %. "
        f"Sparsity: % of {'decoder-block' if config['prune']['sparsity_of'] == 'blocks' else 'all'} parameters removed; "
        f"pruned blocks: {protocol_layers()} for every method unless its recipe says otherwise. "
        f"Recipes (score; heads; allocation/budget; layers; flow; reconstruction; calibration): "
        + "; ".join(recipe_summary(name, stage) for _, name, _, stage in dict.fromkeys((None, n, None, st) for _, n, _, st in method_rows(model)))
        + ". "
        f"Calibration sets: {calib}. "
        + (f"Held-out sets (for select only): " + "; ".join(
            f"{name}: {h['n_samples']}x{h['seq_len']} tokens apart from {', '.join(h['fit'])} (seed {h['seed']})"
            for name, h in config["heldout"].items()) + ". " if config["heldout"] else "")
        + f"Regenerate with `make run` (= `snakemake` in the repository root, profiles/default)."
    )


def dense_stream_disk_problems():
    """Dense streams that would not fit on the disk holding results/ ((2 x layers + 1) x tokens x
    hidden values per set, float32 on a CPU), named before any job with the fix; checked for
    models already built (their config.json gives layers and width) and streams not yet written."""
    if not config["recover"]["dense_cache"]:
        return []
    import shutil

    free = shutil.disk_usage(Path("results") if Path("results").is_dir() else Path(".")).free
    problems = []
    for model in config["models"]:
        try:
            mc = json.loads(Path(f"resources/models/{model}/config.json").read_text())
        except (OSError, ValueError):
            continue
        sets = {dense_stream_set(config["methods"][n], st) for _, n, _, st in method_rows(model)} - {None}
        sets = {c for c in sets if not Path(dense_stream_dir(model, c)).exists()}
        values = sum((2 * mc["num_hidden_layers"] + 1) * int(config["calibration"][c]["n_samples"])
                     * int(config["calibration"][c]["seq_len"]) * mc["hidden_size"] for c in sets)
        needed = values * (2 if _weights_dtype(model) in ("bfloat16", "float16") else 4)
        if needed > free:
            problems.append(f"  recover.dense_cache: the dense streams of model {model} on {sorted(sets)} need "
                            f"{needed / 1e9:.1f} GB and {free / 1e9:.1f} GB are free; set recover.dense_cache: false "
                            "(each refit then runs the dense layers itself) or free disk space")
    return problems


if workflow.is_main_process:
    if _disk := dense_stream_disk_problems():
        raise WorkflowError("invalid configuration for the disk at hand:\n" + "\n".join(_disk))
    rebuild_damaged_artifacts()
