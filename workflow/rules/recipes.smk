# Input functions and command lines of the score, prune and select rules: what a method's
# stage recipe reads (scores, statistics, samples, the dense stream) and its settings as words.


def sparsity_percent(wildcards):
    """The command line's --sparsity: the percentage, as in the config and the paths."""
    return int(wildcards.sparsity)


def method_option_words(options):
    return [w for key, value in sorted(options.items()) for w in ("--option", f"{key}={value}")]


def method_options(wildcards):
    """--option NAME=VALUE for each method option, so params triggers see every change."""
    return sh(*method_option_words(method_cfg(wildcards)["options"]))


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


def stats_arg(wildcards, input):
    return sh(*input_words(input, {"stats": "--stats"}))


# ----------------------------------------------------------------------- dense stream

def dense_stream_dir(model, calib):
    return fill(rules.dense_stream.output.dense, model=model, calib=calib)


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


# ------------------------------------------------------------------------------ prune

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
    if recipe.reads_depth_order:
        inputs["order"] = f"results/{model}/{wildcards.calib}/{wildcards.method}/order.json"
    return inputs


def layers_word(layers):
    """A pruned-block range as the command line's --layers word: protocol, all or START:END."""
    return layers if isinstance(layers, str) else "{}:{}".format(*layers)


def recipe_words(recipe, settings):
    """A recipe as command-line words of `prune` and `select`: the fields in `settings` (the
    damping and refit target only where they change what runs: Recipe.settings)."""
    words = ["--unit", recipe.unit] if "unit" in settings else []  # width (the default) stays unsaid
    words += ["--method", recipe.score, *method_option_words(recipe.options),
             "--heads", recipe.heads, "--allocation", recipe.allocation, "--budget", recipe.budget, "--layers", layers_word(recipe.layers),
             "--sparsity-of", recipe.sparsity_of, "--flow", recipe.flow, "--reconstruct", recipe.reconstruct]
    words += ["--damp", recipe.damp] if "damp" in settings else []
    words += ["--target", recipe.target] if "target" in settings else []
    words += ["--depth-share", recipe.depth_share] if settings.get("depth_share") else []
    return words + ["--round-to", recipe.round_to, "--batch-size", config["recover"]["batch_size"]]


def prune_args(wildcards, input):
    """The prune command's recipe and input arguments (every choice visible to rerun checks)."""
    recipe = wildcard_recipe(wildcards)
    return sh(*recipe_words(recipe, recipe.settings()),
              *input_words(input, {"scores": "--scores", "stats": "--stats", "samples": "--data", "dense": "--dense-stream",
                                   "order": "--order"}))


def depth_order_args(wildcards):
    """The depth-order command's criterion, candidate range and batch size."""
    m = method_cfg(wildcards)
    return sh("--method", m["score"], "--layers", layers_word(stage_recipe(config, m, "pruned").layers),
              "--batch-size", config["recover"]["batch_size"])


def prune_settings(wildcards):
    """Every setting of a prune job as text: a params entry that needs no `input`, so that
    Snakemake's params-change check sees a changed recipe (issue #14)."""
    return str(sorted(wildcard_recipe(wildcards).settings().items())) + f" calib={stage_calib(method_cfg(wildcards), wildcards.stage)}"


# ----------------------------------------------------------------------------- select

def select_method_pattern():
    """Wildcard constraint of the select rule: the methods with a select section (none: a
    pattern that matches nothing)."""
    names = select_methods()
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


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


# ------------------------------------------------------------------------ disp search

def search_method_pattern():
    """Wildcard constraint of the disp_search rule: the searched methods (DISP-LLM), or nothing."""
    names = [name for name, m in config["methods"].items() if m["score"] in SEARCH_SCORES]
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def disp_args(wildcards):
    """The search's settings and the pruned range as command-line words (params: a changed
    setting reruns the search)."""
    m = method_cfg(wildcards)
    search = m["search"]
    return sh("--layers", layers_word(stage_recipe(config, m, "pruned").layers), "--steps", search["steps"], "--batch-size", search["batch_size"], "--lam", search["lam"],
              "--lr", search["lr"], "--seed", search["seed"], "--save-every", search["save_every"])
