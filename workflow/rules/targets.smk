# What a config asks for: the checkpoints of every method, sparsity and stage, and the files
# each model's report reads (evaluations, speeds, exports, benchmarks), named through the
# rules' own output and benchmark patterns (`rules.<rule>`), so no path is spelled twice.
# Called only once the rule files are read (input functions, `rule all`, integrity.smk).


def method_rows(model):
    """(calib, method, sparsity, stage) of every checkpoint the config asks for, by sparsity
    (the table's order)."""
    return [
        (m["calib"], name, s, stage)
        for s in sorted(config["sparsities"])
        for name, m in config["methods"].items()
        for stage in (STAGES if m["recover"] else STAGES[:1])
    ]


def checkpoint_jobs(model):
    """The wildcards of each checkpoint's jobs, in method_rows' order."""
    return [dict(model=model, calib=c, method=m, sparsity=s, stage=st) for c, m, s, st in method_rows(model)]


def _model_of(wildcards_or_model):
    return getattr(wildcards_or_model, "model", wildcards_or_model)


def selection_rows(model):
    """(method, sparsity, checkpoint) of every select checkpoint (the selection table)."""
    return [(job["method"], job["sparsity"], fill(rules.prune.output.ckpt, **job))
            for job in checkpoint_jobs(model) if config["methods"][job["method"]].get("select")]


def model_selections(wildcards):
    return [path for _, _, path in selection_rows(wildcards.model)]


def selection_args(wildcards):
    return sh(*[w for m, s, path in selection_rows(wildcards.model) for w in ("--selection", f"{m}:{s}={path}")])


def model_evals(wildcards_or_model):
    model = _model_of(wildcards_or_model)
    return [fill(rules.evaluate_dense.output.result, model=model)] + [
        fill(rules.evaluate.output.result, **job) for job in checkpoint_jobs(model)]


def speed_sparsities():
    """Sparsities whose checkpoints are measured: evaluation.speed.sparsities, else the task
    sparsities, else all (none when evaluation.speed is off)."""
    sp, ev = config["evaluation"]["speed"], config["evaluation"]
    if not sp["enabled"]:
        return set()
    return set(sp["sparsities"] or ev["task_sparsities"] or config["sparsities"])


def model_speeds(wildcards_or_model):
    """Speed measurements of the checkpoints at the speed sparsities."""
    model, measured = _model_of(wildcards_or_model), speed_sparsities()
    return [fill(rules.speed.output.result, **job) for job in checkpoint_jobs(model) if job["sparsity"] in measured]


def model_exports(wildcards_or_model):
    """Every checkpoint's GGUF export (and the dense model's), when export is enabled."""
    model = _model_of(wildcards_or_model)
    if not export_enabled(model):
        return []
    return [fill(rules.export_dense.output.info, model=model)] + [
        fill(rules.export.output.info, **job) for job in checkpoint_jobs(model) if method_exported(model, job["method"])]


def model_gguf_evals(wildcards_or_model):
    """llama.cpp perplexity of the exports at the speed sparsities (and of the dense export)."""
    model, measured = _model_of(wildcards_or_model), speed_sparsities()
    if not export_enabled(model):
        return []
    return [fill(rules.evaluate_gguf_dense.output.result, model=model)] + [
        fill(rules.evaluate_gguf.output.result, **job) for job in checkpoint_jobs(model)
        if job["sparsity"] in measured and method_exported(model, job["method"])]


def model_benchmarks(wildcards):
    """Benchmark files of the jobs behind a model's table (for the compute-time summary)."""
    model, export = wildcards.model, export_enabled(wildcards.model)

    def bench(rule, **wildcards):
        return fill(getattr(rules, rule).benchmark, **{"model": model, **wildcards})

    files = [bench("model"), bench("evaluate_dense")]
    if export:
        files += [bench("export_dense"), bench("evaluate_gguf_dense")]
    calibs, dense_sets, measured = [], [], speed_sparsities()
    for job in checkpoint_jobs(model):
        m, stage = config["methods"][job["method"]], job["stage"]
        recipe = stage_recipe(config, m, stage)
        if (dense := dense_stream_set(m, stage)) is not None:
            dense_sets.append(dense)
        if recipe.reads_score_file and not m.get("select"):  # select scores every candidate itself
            files.append(bench("score", **job))
        if m["score"] in GRADIENT_SCORES:
            files.append(bench("gradients", **job))
        exported = method_exported(model, job["method"])
        if recipe.reads_depth_order:
            files.append(bench("depth_order", model=model, calib=job["calib"], method=job["method"]))
        if m["score"] in SEARCH_SCORES:
            files.append(bench("disp_search", **job))
        elif m.get("select"):
            files.append(bench("select", **job))
            files.append(bench("data_heldout", heldout=m["select"]["heldout"]))
            calibs += [select_samples(m), *config["heldout"][m["select"]["heldout"]]["fit"]]
        else:
            files.append(bench("prune", **job))
        files.append(bench("evaluate", **job))
        if job["sparsity"] in measured:
            files.append(bench("speed", **job))
            if exported:
                files.append(bench("evaluate_gguf", **job))
        if exported:
            files.append(bench("export", **job))
        calibs += [job["calib"], stage_calib(m, stage)]
    for calib in [c for c in dict.fromkeys(calibs) if c != "none"]:  # ordered: params must be stable
        files.append(bench("data_calib", calib=calib))
        # the calibrate stage runs for the scores that read activation moments (not gradients, samples or a search)
        if any(m["calib"] == calib and SCORE_STATISTICS[m["score"]] == "moments" for m in config["methods"].values()):
            files.append(bench("calibrate", calib=calib))
    files += [bench("dense_stream", calib=calib) for calib in dict.fromkeys(dense_sets)]
    return sorted(set(files), key=files.index)


def label_args(model):
    """Each row's name, and for recovered rows a Calibration cell naming the recovery's set too."""
    words = [w for _, name, _, stage in method_rows(model) for w in ("--label", f"{name}:{stage}={method_label(name, stage)}")]
    for name, stage in dict.fromkeys((name, stage) for _, name, _, stage in method_rows(model)):
        m = config["methods"][name]
        if stage == "recovered":
            words += ["--calibration", f"{name}:{stage}={m['calib']} + {stage_calib(m, stage)} (recovery)"]
    return sh(*words)


def report_note(wildcards):
    """The protocol note under a model's table (structprune.report.protocol), with the data mirror
    as configured rather than resolved: params that hold no checkout path."""
    configured = os.environ.get(MIRROR_ENV) or config["data"]["mirror"]
    splits = {d: eval_split(d) for d in config["evaluation"]["perplexity"]["datasets"]}
    # Snakemake makes the config files absolute: those inside the working directory are named
    # relative to it, so the note holds no checkout path and is the same in every clone
    relative = [(path, os.path.relpath(path)) for path in workflow.overwrite_configfiles or []]
    files = [path if rel.startswith("..") else rel for path, rel in relative]
    command = "snakemake" + "".join(f" --configfile {path}" for path in files)
    note = table_note(config, wildcards.model, method_rows(wildcards.model), configured if MIRROR else None, splits,
                      command)
    facts = []
    if dense_note := source_note(config["models"][wildcards.model]["source"]):
        facts.append(dense_note)
    if wildcards.model in EXPORT_SKIPS:
        facts.append(f"No GGUF export: {EXPORT_SKIPS[wildcards.model]}.")
    elif export_enabled(wildcards.model):
        facts += [f"No GGUF export of {method_label(name, 'pruned')}: {why}; its speed is measured in transformers only."
                  for name, why in METHOD_EXPORT_SKIPS.items()]
    return with_facts(note, facts)  # after the protocol's bullets, before the recipes


def algorithm2_calibs(wildcards):
    """Calibration sets of the rows whose dense scores use the paper's Algorithm 2 (the note
    counts its candidates: structprune.report.algorithm2)."""
    return [calib for calib in js_methods(config) if calib != "none"]


def algorithm2_statistics(wildcards):
    return [statistics_file(wildcards.model, calib, "distribution") for calib in algorithm2_calibs(wildcards)]


def all_targets():
    """Each model's tables, perplexity plot and run record (not committed: a fresh clone reruns)."""
    out, models = rules.report.output, config["models"]
    targets = [fill(path, model=m) for m in models for path in (out.md, out.selection_md)]
    targets += [fill(out.plot, model=m) for m in models]
    targets += [fill(out.run, model=m) for m in models]
    return targets
