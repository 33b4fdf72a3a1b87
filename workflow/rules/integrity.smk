# Before planning, in the main process: dense streams that would not fit on the disk are named
# with the fix, and damaged artifacts this config's jobs write are rebuilt with what reads them.
# Included last, after the stages' files, as config_artifacts() reads their output paths.


def config_artifacts():
    """Every tensor file, checkpoint folder and evaluation JSON the config's jobs write (paths
    relative to the working directory): the damaged ones among them are rebuilt."""
    found = set()
    for model in config["models"]:
        found.add(fill(rules.model.output.ckpt, model=model))
        found.update(fill(rules.data_eval.output.tokens, model=model, dataset=d)
                     for d in config["evaluation"]["perplexity"]["datasets"])
        found.update(fill(rules.data_calib.output.samples, model=model, calib=c) for c in config["calibration"])
        found.update(fill(rules.data_heldout.output.samples, model=model, heldout=h) for h in config["heldout"])
        found.update(fill(rule.output.stats, model=model, calib=c) for c in config["calibration"]
                     for rule in (rules.calibrate, rules.gradients))
        found.update(dense_stream_dir(model, c) for c in config["calibration"])
        found.update(fill(rules.data_task.output.records, task=t) for t in config["evaluation"]["tasks"])
        for job in checkpoint_jobs(model):
            found.add(fill(rules.score.output.scores, **job))
            found.add(fill(rules.prune.output.ckpt, **job))
        found.update(model_evals(model), model_speeds(model), model_exports(model), model_gguf_evals(model))
    return found


def rebuild_damaged_artifacts():
    """Every damaged artifact (truncated safetensors, unparsable config or evaluation JSON) that
    this config's jobs write is forced to rerun, and with it everything that reads it
    (Snakemake 9 would not rerun a job for a damaged or missing intermediate whose consumers
    are up to date); a damaged file no job of this config writes is named and left alone."""
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
    the workflow, so the addition is made as the DAG is prepared (a wrapper around the
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
