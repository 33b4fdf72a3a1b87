# Config loading and validation, wildcard constraints, shell quoting, lookups and the input
# functions of the data, evaluate, export and speed rules (prune and select: recipes.smk).
import json
import os
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import update_config

# Jobs run this checkout's library (`python -m structprune` resolves to src/ first), so the code
# fingerprints (resources.smk) describe the code that actually runs, and a conda env (--sdm
# conda) needs only the dependencies. Jobs on cluster nodes re-parse this file and get the same.
# (The Snakefile has put src/ on sys.path already: these imports need no install.)
REPO = Path(workflow.basedir)
SRC = REPO / "src"
os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
from structprune.spec.codeversion import stage_code_version
from structprune.spec.configcheck import (
    GRADIENT_SCORES, STAGES, ConfigError, row_label, select_candidates, stage_calib, stage_recipe, validate_config,
)
from structprune.spec.catalog import SCORE_STATISTICS, SEARCH_SCORES
from structprune.spec.modelcheck import (
    export_skips, method_export_skips, model_family_problems, model_limit_problems, text_size_problems,
)
from structprune.spec.configfile import ConfigFileError, typed_overrides
from structprune.spec.recipe import StatisticsNeeds, recipe_problems, statistics_needs
from structprune.spec.resources import memory_mb as job_memory_mb, runtime_minutes as job_runtime_minutes
from structprune.report.protocol import js_methods, table_note, with_facts
from structprune.model.sources import source_note

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MIRROR_ENV = "STRUCTPRUNE_DATA_MIRROR"


try:  # --config's numbers inside lists and mappings arrive as strings: read them as a file would
    # (config_settings.config holds the --config values alone; overwrite_config also holds the
    # --configfile contents, where an empty mapping such as `heldout: {}` is a real choice)
    update_config(config, typed_overrides(dict(workflow.config_settings.config or {})))
    validate_config(config, SCHEMA)
except (ConfigError, ConfigFileError) as error:
    raise WorkflowError(str(error)) from None
_limits = model_family_problems(config) + model_limit_problems(config)
if _limits:
    raise WorkflowError("invalid configuration for this model (fix config.yaml or your --configfile):\n"
                        + "\n".join(_limits))
# The report's file stem: the model, then the config's name when it has one, so configs that share a
# model's cached stages (config.yaml, config/benchmark.yaml, ...) keep their own tables and plots.
REPORT = "{model}" + (f".{config['name']}" if config.get("name") else "")
# Exports that would compute something else (a family llama.cpp cannot express yet) are
# skipped, not failed: the tables still build and say why.
EXPORT_SKIPS = export_skips(config)
METHOD_EXPORT_SKIPS = method_export_skips(config)  # {method: why}: rows llama.cpp cannot express
for _model, _why in EXPORT_SKIPS.items():
    logger.warning(f"structprune: GGUF export skipped for {_why}")


def export_enabled(model):
    return config["export"]["enabled"] and model not in EXPORT_SKIPS


def method_exported(model, method):
    """Whether a method's checkpoints of `model` get a GGUF export, its llama.cpp perplexity and timing."""
    return export_enabled(model) and method not in METHOD_EXPORT_SKIPS


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


def fill(pattern, **wildcards):
    """A rule's path pattern (`rules.<rule>.output.<key>`, `.benchmark`) with its wildcards
    filled in: the target lists name what the rules write without spelling the paths again."""
    return str(pattern).format(**wildcards)


def input_words(input, flags):
    """`--flag path` for each input key present ({key: flag})."""
    return [w for key, flag in flags.items() if key in input.keys() for w in (flag, input[key])]


# --------------------------------------------------------------------------- lookups

def model_cfg(wildcards):
    return config["models"][wildcards.model]


def method_cfg(wildcards):
    return config["methods"][wildcards.method]


def calib_cfg(wildcards):
    return config["calibration"][wildcards.calib]


def heldout_cfg(wildcards):
    return config["heldout"][wildcards.heldout]


def method_label(name, stage):
    return row_label(config, name, stage)


def eval_split(dataset):
    splits = config["evaluation"]["perplexity"]["splits"]
    if dataset not in splits:
        raise WorkflowError(f"evaluation.perplexity.splits has no split for {dataset!r}")
    return splits[dataset]


def select_methods():
    return [name for name, m in config["methods"].items() if m.get("select")]


def select_samples(method):
    return method["select"].get("samples") or method["calib"]


# ------------------------------------------------------------------------------- data

def selfgen_words(c):
    """The sampling settings of a self-generated set."""
    start = ["--start-token", c["start_token"]] if c["start_token"] is not None else []
    return ["--temperature", c["temperature"], "--top-p", c["top_p"], *start, *(["--drop-start"] if c["drop_start"] else [])]


def calib_source_args(wildcards):
    """Where calibration samples come from: a text split, or the model itself (selfgen)."""
    c = calib_cfg(wildcards)
    if c["dataset"] == "random":
        return ""
    if c["dataset"] == "selfgen":
        return sh(*selfgen_words(c))
    return sh("--split", c["split"], *MIRROR_WORDS)


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


# --------------------------------------------------------------------------- evaluate

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


def ppl_protocol_words():
    """Window length, cap and placement (the placement only with a cap: all windows are scored
    without one, so changing it then reruns nothing); evaluate and evaluate_gguf share them."""
    ppl = config["evaluation"]["perplexity"]
    cap = ["--max-tokens", ppl["max_tokens"], "--windows", ppl["windows"]] if ppl["max_tokens"] else []
    return ["--seq-len", ppl["seq_len"], *cap]


def ppl_protocol_args():
    return sh(*ppl_protocol_words())


def task_protocol_words():
    """Items per task and which ones (with a limit only; the seed only for a random sample)."""
    ev = config["evaluation"]
    if not ev["limit"]:
        return []
    seed = ["--items-seed", ev["items_seed"]] if ev["items"] == "random" else []
    return ["--limit", ev["limit"], "--items", ev["items"], *seed]


def eval_protocol_args():
    return sh(*ppl_protocol_words(), "--batch-size", config["evaluation"]["batch_size"], *task_protocol_words())


# ---------------------------------------------------------------------- export and speed

def export_args(wildcards):
    """Tensor type and tokenizer source of a model's GGUF exports: a GGUF source's tokenizer is
    copied; other sources need the model's `gguf_tokenizer_pre` (llama.cpp's pre-tokenizer)."""
    m = config["models"][wildcards.model]
    pre = ["--tokenizer-pre", m["gguf_tokenizer_pre"]] if m["gguf_tokenizer_pre"] else []  # configcheck requires it for a source that is not GGUF
    return sh("--type", config["export"]["type"], "--source", m["source"], *pre)


def gguf_ppl_inputs(wildcards):
    """The perplexity streams the GGUF check reads (export.perplexity; no task items)."""
    return {f"ppl_{d}": f"resources/data/{wildcards.model}/eval/{d}.safetensors" for d in config["export"]["perplexity"]}


def gguf_ppl_args(wildcards, input):
    return sh(*[w for d in config["export"]["perplexity"] for w in ("--ppl", f"{d}={input['ppl_' + d]}")])


def speed_gguf_inputs(wildcards):
    """The checkpoint's and the dense model's exports, timed in llama.cpp by the speed job."""
    if not method_exported(wildcards.model, wildcards.method):
        return {}
    base = f"results/{wildcards.model}/{wildcards.calib}/{wildcards.method}/s{wildcards.sparsity}"
    return {"gguf": f"{base}/gguf/{wildcards.stage}.gguf", "dense_gguf": f"results/{wildcards.model}/dense/gguf/model.gguf"}


def speed_gguf_args(wildcards, input):
    return sh(*input_words(input, {"gguf": "--gguf", "dense_gguf": "--dense-gguf"}))


def speed_job_threads(wildcards):
    """A speed job takes every core this Snakemake may use, so no other job runs beside its
    measurement (which itself runs on evaluation.speed.threads threads: speed_measure_threads).
    On a cluster each job has its own allocation: the measurement's threads."""
    own = config["evaluation"]["speed"]["threads"]
    if not workflow.local_exec:
        return own
    try:
        return workflow.cores
    except WorkflowError:  # no total number of cores (remote execution)
        return own


def speed_measure_threads(wildcards, threads):
    """The measurement's threads: evaluation.speed.threads, within what the job was given."""
    return min(config["evaluation"]["speed"]["threads"], threads)


def speed_protocol_args():
    sp = config["evaluation"]["speed"]
    return sh("--repeats", sp["repeats"], "--new-tokens", sp["new_tokens"], "--prefill", *sp["prefill"],
              "--decode-batches", *sp["decode_batches"], "--llamacpp-new-tokens", sp["llamacpp_new_tokens"],
              "--llamacpp-repeats", sp["llamacpp_repeats"])
