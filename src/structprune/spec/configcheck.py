"""Config validation: the schema (with defaults filled in), then every combination a schema
cannot express (recipe rules, score options against each score's signature, calibration and
held-out sets, select grids, evaluation windows). What is checked against files on disk (the
mirror's text, a built model's limits and family) is in modelcheck.py.

Pure functions on the config dict, so the Snakefile (common.smk) validates before planning
any job and the tests check each bad config's message without running Snakemake. Every message
names the key, the value and the fix. Standard library, jsonschema and yaml only: no torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import jsonschema
import yaml

from structprune.io.artifacts import nonfinite_values
from structprune.spec import catalog
from structprune.spec.catalog import CHOICES, SCORE_STATISTICS, SELECT_CHOICES
from structprune.spec.recipe import (
    Recipe,
    candidate_recipes,
    damp_problem,
    depth_share_problem,
    layers_problem,
    recipe_problems,
)
from structprune.spec.scoreoptions import option_value_problem, score_option_specs

SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
DATA_FREE_SCORES = {s for s, kind in SCORE_STATISTICS.items() if kind == "none"}  # no calibration statistics
GRADIENT_SCORES = {s for s, kind in SCORE_STATISTICS.items() if kind == "gradients"}  # rule gradients, not moments
STAGES = ("pruned", "recovered")
SCORE_SPECS = score_option_specs()  # read from the source, no torch import
SCORE_OPTIONS = {score: list(specs) for score, specs in SCORE_SPECS.items()}


class ConfigError(ValueError):
    """A configuration that cannot run; the message lists every problem found."""


MAX_SAMPLE_TOKENS = 2**24  # samples x seq_len of one calibration or held-out set (the paper's largest: 1024 x 128)


def _validator_filling_defaults():
    """A JSON-schema validator that also writes each property's default into the config, and
    whose types are strict: an integer is no float (`n_samples: 4.0` is rejected, where JSON
    schema would take it) and a number is finite (NaN and infinity are no setting)."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = yaml.safe_load(yaml.safe_dump(sub["default"]))
        yield from validate_properties(validator, props, instance, schema)

    types = base.TYPE_CHECKER.redefine_many({
        "integer": lambda _, value: isinstance(value, int) and not isinstance(value, bool),
        "number": lambda _, value: (isinstance(value, (int, float)) and not isinstance(value, bool)
                                    and math.isfinite(value)),
    })
    return jsonschema.validators.extend(base, {"properties": properties}, type_checker=types)


def nonfinite_problems(cfg) -> list[str]:
    """Every NaN or infinity in a config (YAML's .nan / .inf), by key: no setting takes one,
    and the schema's own message ("nan is not of type 'number'") does not say why."""
    return [f"  {key}: {value} is not a finite number; write a number" for key, value in nonfinite_values(cfg)]


def stage_recipe(cfg, method, stage):
    """The engine recipe of one method's stage: the method's choices over the prune section's
    defaults; the recovered stage takes the recover section's flow and reconstruction (and the
    method's remedy overrides)."""
    prune, m = cfg["prune"], method
    fields = {
        "score": m["score"], "options": m["options"], "heads": m.get("heads") or prune["heads"],
        "allocation": m["allocation"], "budget": m.get("budget") or prune["budget"],
        "layers": m.get("layers") or prune["layers"], "sparsity_of": prune["sparsity_of"],
        "flow": m["flow"], "reconstruct": m["reconstruct"], "damp": cfg["recover"]["damp"],
        "target": cfg["recover"]["target"], "round_to": m.get("round_to") or prune["round_to"],
        "unit": m["unit"], "depth_share": m.get("depth_share", 0.0),
    }
    if stage == "recovered":
        remedy = {**{k: cfg["recover"][k] for k in ("flow", "reconstruct", "damp", "target")}, **m["remedy"]}
        fields.update({k: remedy[k] for k in ("flow", "reconstruct", "damp", "target")})
    return Recipe(**fields)


def stage_calib(method, stage):
    """The calibration set whose samples flow through a stage (the recovered stage: remedy.calib)."""
    if stage == "recovered":
        return method["remedy"].get("calib") or method["calib"]
    return method["calib"]


def row_label(cfg, name, stage):
    """A method stage's row name in the table: its label (default: the key), the recovered
    stage's remedy label (default: '<label> w/ remedy')."""
    m = cfg["methods"][name]
    label = m.get("label") or name
    if stage == "recovered":
        return m["remedy"].get("label") or f"{label} w/ remedy"
    return label


def label_problems(cfg) -> list[str]:
    """Two rows of one name: the table would show two rows no reader can tell apart."""
    seen, problems = {}, []
    for name, m in cfg["methods"].items():
        for stage in STAGES if m["recover"] else STAGES[:1]:
            label = row_label(cfg, name, stage)
            if label in seen:
                problems.append(f"  methods.{name}: row name {label!r} is also {seen[label]}'s; give each method "
                                "(and remedy) its own label")
            seen.setdefault(label, f"methods.{name}" + (" (recovered)" if stage == "recovered" else ""))
    return problems


def sample_size_problems(cfg) -> list[str]:
    """Calibration and held-out sets too large to be a calibration set (tokens)."""
    sets = [(f"calibration.{n}", c) for n, c in cfg.get("calibration", {}).items()]
    sets += [(f"heldout.{n}", h) for n, h in cfg.get("heldout", {}).items()]
    return [f"  {key}: {c['n_samples']} x {c['seq_len']} = {c['n_samples'] * c['seq_len']:,} tokens is more than "
            f"{MAX_SAMPLE_TOKENS:,} (the paper's largest set is 1024 x 128); lower n_samples"
            for key, c in sets if c["n_samples"] * c["seq_len"] > MAX_SAMPLE_TOKENS]


def method_problems(cfg, name, method):
    """Why a method entry cannot run, in words that name the key to change."""
    problems, calib, score = [], method["calib"], method["score"]
    known = sorted(cfg.get("calibration", {}))
    for key, value in (("calib", calib), ("remedy.calib", method["remedy"].get("calib"))):
        if value not in (None, "none") and value not in known:
            problems.append(f"{key}: {value!r} is neither 'none' nor a key of calibration (known: {known})")
    for option, value in method["options"].items():
        problems += option_problems(score, f"options.{option}", option, [value])
    if score in DATA_FREE_SCORES and calib != "none":
        problems.append(f"calib: score {score!r} is data-free; set calib: none")
    if score not in DATA_FREE_SCORES and calib == "none":
        problems.append(f"calib: score {score!r} needs calibration data")
    problems += search_problems(method)
    if method.get("select"):
        problems += select_problems(cfg, method)
    for stage in ("pruned", "recovered") if method["recover"] else ("pruned",):
        recipe = stage_recipe(cfg, method, stage)
        where = "" if stage == "pruned" else "recovered stage (recover section / remedy): "
        problems += [where + p for p in recipe_problems(recipe)]
        if recipe.needs_dense_moments and score in GRADIENT_SCORES and stage == "pruned":
            problems.append(f"reconstruct: bias compensation needs activation statistics, and score {score!r} "
                            "reads gradients; use reconstruct: none or refit")
        if (recipe.needs_samples or recipe.needs_dense_moments) and stage_calib(method, stage) == "none":
            what = "samples to run through the layers" if recipe.needs_samples else "activation statistics (bias compensation)"
            key = "remedy.calib" if stage == "recovered" else "calib"
            problems.append(f"{where}{key}: this recipe needs {what}; name a calibration set")
    return problems


def search_problems(method) -> list[str]:
    """What a searched method (DISP-LLM) cannot combine with, and a search section without one."""
    if method["score"] not in catalog.SEARCH_SCORES:
        return ["search: only a searched method (score disp, DISP-LLM) has a search section; remove it"] if "search" in method else []
    problems = [] if "search" in method else ["search: DISP-LLM needs a search section with its steps (e.g. search: {steps: 300})"]
    if method["options"]:
        problems.append("options: DISP-LLM's settings go in its search section (steps, batch_size, lam, lr, seed)")
    if method.get("select"):
        problems.append("select: DISP-LLM learns its selection on calibration text; a select grid would prune again: remove it")
    if method["recover"]:
        problems.append("recover: DISP-LLM keeps the model's weights frozen and has no recovered stage: set recover: false")
    return problems


def option_problems(score: str, key: str, option: str, values: list) -> list[str]:
    """Why `option` (at config `key`) with each of `values` is not something `score` accepts:
    an unknown name, or a value its maker's signature and checks reject."""
    allowed = SCORE_OPTIONS.get(score, [])
    if option not in allowed:
        return [f"{key}: score {score!r} has no such option (known: {allowed or 'none'})"]
    return [f"{key}: {problem} (score {score!r})" for value in values
            if (problem := option_value_problem(SCORE_SPECS[score][option], value))]





def select_candidates(cfg, method):
    """(overrides, Recipe) of every combination of a select grid over the method's recipe."""
    return candidate_recipes(stage_recipe(cfg, method, "pruned"), method["select"]["grid"])


def grid_problems(score: str, grid: dict) -> list[str]:
    """Why a select grid's keys or values are not choices (a typo such as `refitt` would
    otherwise only drop its candidates); config validation and the `select` command share it."""
    problems = []
    for key, values in grid.items():
        if key.startswith("options."):
            problems += option_problems(score, f"grid.{key}", key[len("options."):], values)
        elif key not in SELECT_CHOICES:
            problems.append(f"grid.{key}: not a recipe choice; use one of {list(SELECT_CHOICES)} or options.<name>")
        elif key == "damp":
            problems += [f"grid.damp: {p.removeprefix('damp: ')}" for v in values if (p := damp_problem(v))]
        elif key == "depth_share":
            problems += [f"grid.{p}" for v in values if (p := depth_share_problem(v))]
        else:
            problems += [f"grid.{key}: {v!r} is not one of {list(CHOICES[key])}" for v in values if v not in CHOICES[key]]
        if len(set(map(repr, values))) < len(values):
            problems.append(f"grid.{key}: {values} lists a value twice")
    return problems


def select_problems(cfg, method):
    """Why a method's select section cannot run."""
    sel, problems = method["select"], []
    if method["recover"]:
        problems.append("select: chooses the pruned stage's reconstruction itself; set recover: false")
    if sel["heldout"] not in cfg.get("heldout", {}):
        problems.append(f"select.heldout: {sel['heldout']!r} is not a key of heldout (known: {sorted(cfg.get('heldout', {}))})")
    samples = sel.get("samples")
    if samples is not None and samples not in cfg.get("calibration", {}):
        problems.append(f"select.samples: {samples!r} is not a key of calibration (known: {sorted(cfg.get('calibration', {}))})")
    if sel.get("at") is not None and sel["at"] not in cfg["sparsities"]:
        problems.append(f"select.at: {sel['at']} is not one of sparsities {cfg['sparsities']}; choose at a sparsity the run has")
    for key in sel.get("rechoose", []):
        if key not in sel["grid"]:
            problems.append(f"select.rechoose: {key!r} is not a key of select.grid ({sorted(sel['grid'])}); only grid choices can be chosen again")
    if sel.get("rechoose") and sel.get("at") is None:
        problems.append("select.rechoose: needs select.at (without it every sparsity chooses the whole grid already)")
    problems += [f"select.{p}" for p in grid_problems(method["score"], sel["grid"])]
    if problems:
        return problems
    held = cfg["heldout"][sel["heldout"]]
    fit_data = {method["calib"], samples or method["calib"]} - {"none"}
    unseen = sorted(d for d in fit_data if d not in held["fit"] and cfg["calibration"][d]["dataset"] != "random")
    if unseen:
        problems.append(f"select.heldout: held-out set {sel['heldout']!r} is not kept apart from {unseen}, which the "
                        f"candidates are fit on; add them to heldout.{sel['heldout']}.fit")
    fit_seeds = {cfg["calibration"][d]["seed"] for d in fit_data if cfg["calibration"][d]["dataset"] == "selfgen"}
    if held["seed"] in fit_seeds:
        problems.append(f"heldout.{sel['heldout']}.seed: {held['seed']} is a self-generated fit set's seed (its samples "
                        "would repeat); pick another")
    runnable = [c for c in select_candidates(cfg, method) if not recipe_problems(c[1])]
    if not runnable:
        problems.append("select.grid: no combination of its values can run (see recipe rules in docs/method.md)")
    elif any(r.needs_samples for _, r in runnable) and (samples or method["calib"]) == "none":
        problems.append("select.samples: some candidates run samples through the layers; name a calibration set")
    elif any(r.needs_dense_moments for _, r in runnable) and (method["calib"] == "none" or method["score"] in GRADIENT_SCORES):
        problems.append("select.grid: a bias-compensation candidate needs activation statistics, and calib gives "
                        f"{'none' if method['calib'] == 'none' else 'gradients'}; drop reconstruct: bias from the grid")
    return problems


def heldout_problems(cfg):
    """Why a heldout entry cannot be built: its fit sets must exist and share one text (or be
    self-generated), since the held-out windows are drawn from that text apart from theirs."""
    problems, calibration = [], cfg.get("calibration", {})
    for name, h in cfg.get("heldout", {}).items():
        unknown = [f for f in h["fit"] if f not in calibration]
        if unknown:
            problems.append(f"  heldout.{name}.fit: {unknown} are not keys of calibration (known: {sorted(calibration)})")
            continue
        sources = {(calibration[f]["dataset"], calibration[f]["split"] if calibration[f]["dataset"] not in ("selfgen", "random") else None)
                   for f in h["fit"]}
        if len(sources) > 1:
            problems.append(f"  heldout.{name}.fit: the fit sets come from different text {sorted(sources)}; name sets of one dataset and split")
        elif next(iter(sources))[0] == "random":
            problems.append(f"  heldout.{name}.fit: random token ids have no held-out text; select data-free methods on selfgen text")
    return problems


def _schema_message(error) -> str:
    """jsonschema's message, with the accepted forms where it only says "not valid under any of
    the given schemas" (the schema's description of the key says what is)."""
    if error.validator in ("oneOf", "anyOf") and error.schema.get("description"):
        return f"{error.instance!r} is not accepted: {error.schema['description']}"
    return error.message


def evaluation_split_problems(cfg) -> list[str]:
    """An evaluation split no calibration or held-out set samples from: perplexity must be
    measured on text the methods never saw (no tuning on evaluation data)."""
    problems, ppl = [], cfg["evaluation"]["perplexity"]
    seen = {(c["dataset"], c.get("split")): name for name, c in cfg.get("calibration", {}).items()}
    for dataset in ppl["datasets"]:
        split = ppl["splits"].get(dataset)
        if (dataset, split) in seen:
            problems.append(f"  evaluation.perplexity.splits.{dataset}: {split!r} is the split calibration set "
                            f"{seen[(dataset, split)]!r} samples from; evaluate on text no method sees "
                            f"(LLM-Pruner's protocol: wikitext2 test, ptb validation)")
    return problems


def with_catalog_enums(schema):
    """The schema with every `x-catalog: NAME` node given `enum: list(catalog.NAME)`, so that a
    list of choices kept in spec/catalog.py (the scores) is written there alone."""
    if isinstance(schema, dict):
        schema = {key: with_catalog_enums(value) for key, value in schema.items()}
        if "x-catalog" in schema:
            schema["enum"] = list(getattr(catalog, schema["x-catalog"]))
    elif isinstance(schema, list):
        schema = [with_catalog_enums(value) for value in schema]
    return schema


def validate_config(cfg, schema_path: Path = SCHEMA):
    """Fill the schema's defaults into `cfg` and raise ConfigError naming every problem: the
    schema first (types, enums, ranges), then the combinations the schema cannot express."""
    schema = with_catalog_enums(yaml.safe_load(Path(schema_path).read_text()))
    if not isinstance(cfg, dict):
        raise ConfigError(f"invalid configuration: the config is {type(cfg).__name__} {cfg!r}, not a mapping of "
                          "keys (models, methods, sparsities, ...); see config.yaml")
    problems = nonfinite_problems(cfg)
    errors = [] if problems else sorted(_validator_filling_defaults()(schema).iter_errors(cfg), key=lambda e: list(e.path))
    problems += [f"  {'.'.join(str(p) for p in e.path) or '(top level)'}: {_schema_message(e)}" for e in errors]
    if not problems:
        problems += heldout_problems(cfg) + evaluation_split_problems(cfg) + label_problems(cfg) + sample_size_problems(cfg)
        bad_layers = layers_problem(cfg["prune"]["layers"])
        if bad_layers:
            problems.append(f"  prune.{bad_layers}")
        for name, method in cfg["methods"].items() if not bad_layers else ():  # else every method repeats it
            problems += [f"  methods.{name}: {p}" for p in method_problems(cfg, name, method)]
        ppl = cfg["evaluation"]["perplexity"]
        if ppl["max_tokens"] is not None and ppl["seq_len"] > ppl["max_tokens"]:
            problems.append(
                f"  evaluation.perplexity.seq_len: {ppl['seq_len']}-token windows do not fit in max_tokens "
                f"{ppl['max_tokens']}; raise max_tokens or lower seq_len"
            )
        for model, m in cfg["models"].items() if cfg["export"]["enabled"] else ():
            if not m["source"].startswith(("gguf:", "gguf-package:")) and not m["gguf_tokenizer_pre"]:
                problems.append(f"  models.{model}: export needs `gguf_tokenizer_pre` (llama.cpp's pre-tokenizer name, "
                                "for example llama-bpe or smollm) for a source that is not a GGUF file, or `export: {enabled: false}`")
        unknown = set(cfg["export"]["perplexity"]) - set(ppl["datasets"])
        if unknown:
            problems.append(f"  export.perplexity: {sorted(unknown)} are not in evaluation.perplexity.datasets "
                            f"{ppl['datasets']}; the export's perplexity is checked against the checkpoint's")
        for key, at in (("evaluation.task_sparsities", cfg["evaluation"]["task_sparsities"]),
                        ("evaluation.speed.sparsities", cfg["evaluation"]["speed"]["sparsities"])):
            if at is not None and set(at) - set(cfg["sparsities"]):
                problems.append(
                    f"  {key}: {sorted(set(at) - set(cfg['sparsities']))} are not in sparsities "
                    f"{cfg['sparsities']}; list sparsities the run has, or null for the default"
                )
    if problems:
        raise ConfigError(
            "invalid configuration (fix config.yaml or the --configfile/--config you passed):\n"
            + "\n".join(problems)
        )
