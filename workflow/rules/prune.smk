# Stages `score` (sparsity-independent) and `prune` (one checkpoint per method, sparsity and stage),
# `select` (a held-out grid), `depth_order` (SLEB's and BlockPruner's greedy order, searched once
# for every sparsity) and `disp_search` (DISP-LLM's learned channels).


rule score:
    input:
        unpack(score_inputs),
    output:
        scores="results/{model}/{calib}/{method}/scores.safetensors",
    params:
        compute=compute_args,
        code=code_version("score"),
        score=lambda wc: method_cfg(wc)["score"],
        options=method_options,
        stats=stats_arg,
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/score/{model}/{calib}/{method}.log",
    benchmark:
        "benchmarks/score/{model}/{calib}/{method}.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("score"),
    shell:
        "python -m structprune --threads {threads} {params.compute} score --model {input.model} {params.stats}"
        " --method {params.score} {params.options} --out {output.scores} > {log} 2>&1"


rule dense_stream:
    """The dense model's per-layer outputs on a calibration set, recorded once for every refit
    on it (recover.dense_cache; densestream.py). Not temp(): a job that brought a deleted
    stream back would make every finished refit on the set rerun."""
    input:
        model="resources/models/{model}",
        samples="resources/data/{model}/calib/{calib}.safetensors",
    output:
        dense=directory("results/{model}/calib/{calib}/dense"),
    params:
        compute=compute_args,
        code=code_version("dense-stream"),
        batch_size=config["recover"]["batch_size"],
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/dense_stream/{model}/{calib}.log",
    benchmark:
        "benchmarks/dense_stream/{model}/{calib}.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("dense_stream"),
    shell:
        "python -m structprune --threads {threads} {params.compute} dense-stream --model {input.model}"
        " --data {input.samples} --batch-size {params.batch_size} --out {output.dense} > {log} 2>&1"


rule depth_order:
    """A greedy depth criterion (SLEB, BlockPruner): every candidate removed in the order the
    calibration loss picks, searched once; each sparsity's prune job takes the prefix that
    brings its removed parameters nearest its target (the same removal as a search to it)."""
    input:
        model="resources/models/{model}",
        samples="resources/data/{model}/calib/{calib}.safetensors",
    output:
        order="results/{model}/{calib}/{method}/order.json",
    params:
        compute=compute_args,
        code=code_version("depth-order"),
        args=depth_order_args,
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/depth_order/{model}/{calib}/{method}.log",
    benchmark:
        "benchmarks/depth_order/{model}/{calib}/{method}.tsv"
    threads: config["compute"]["threads"]
    priority: 20  # the longest jobs of a depth run: started first
    resources:
        **stage_resources("depth_order"),
    shell:
        "python -m structprune --threads {threads} {params.compute} depth-order --model {input.model}"
        " --data {input.samples} {params.args} --out {output.order} > {log} 2>&1"


rule prune:
    """One rule for every method and stage: the engine runs the stage's recipe (score x unit x
    allocation x flow x reconstruction; structprune.spec.configcheck `stage_recipe`)."""
    input:
        unpack(prune_inputs),
    output:
        ckpt=directory("results/{model}/{calib}/{method}/s{sparsity}/{stage}"),
    params:
        compute=compute_args,
        code=code_version("prune"),
        sparsity=sparsity_percent,
        settings=prune_settings,
        args=prune_args,
    wildcard_constraints:
        stage="pruned|recovered",
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/prune/{model}/{calib}/{method}/s{sparsity}/{stage}.log",
    benchmark:
        "benchmarks/prune/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("prune"),
    shell:
        "python -m structprune --threads {threads} {params.compute} prune --model {input.model} {params.args}"
        " --sparsity {params.sparsity} --out {output.ckpt} > {log} 2>&1"


rule select:
    """A method with a select section: prune with every candidate of its grid and keep the one
    whose held-out calibration loss is lowest (selection.py); the candidates' losses and the
    choice go into the checkpoint's manifest and the report's selection table."""
    input:
        unpack(select_inputs),
    output:
        ckpt=directory("results/{model}/{calib}/{method}/s{sparsity}/pruned"),
    params:
        compute=compute_args,
        code=code_version("select"),
        sparsity=sparsity_percent,
        settings=select_settings,
        args=select_args,
    wildcard_constraints:
        method=select_method_pattern(),
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/select/{model}/{calib}/{method}/s{sparsity}.log",
    benchmark:
        "benchmarks/select/{model}/{calib}/{method}/s{sparsity}.tsv"
    threads: config["compute"]["threads"]
    # the longest chain of the default run (the grid at select.at, then the other sparsities'
    # selects and their evaluations): started before shorter jobs that are ready as early
    priority: 10
    resources:
        **stage_resources("select"),
    shell:
        "python -m structprune --threads {threads} {params.compute} select --model {input.model} {params.args}"
        " --sparsity {params.sparsity} --out {output.ckpt} > {log} 2>&1"


ruleorder: select > prune


rule disp_search:
    """DISP-LLM (score disp): the hypernetwork learns every pruned layer's residual channels and
    neurons on the method's calibration set with the model frozen, then the checkpoint keeps
    them (stages/disp_search.py). A killed job resumes from the search state it saves beside
    its output every search.save_every steps."""
    input:
        model="resources/models/{model}",
        samples="resources/data/{model}/calib/{calib}.safetensors",
    output:
        ckpt=directory("results/{model}/{calib}/{method}/s{sparsity}/pruned"),
    params:
        compute=compute_args,
        code=code_version("disp-search"),
        sparsity=sparsity_percent,
        args=disp_args,
    wildcard_constraints:
        method=search_method_pattern(),
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/disp_search/{model}/{calib}/{method}/s{sparsity}.log",
    benchmark:
        "benchmarks/disp_search/{model}/{calib}/{method}/s{sparsity}.tsv"
    threads: config["compute"]["threads"]
    priority: 20  # the longest job of a run that has it: started first
    resources:
        **stage_resources("disp_search"),
    shell:
        "python -m structprune --threads {threads} {params.compute} disp-search --model {input.model}"
        " --data {input.samples} {params.args} --sparsity {params.sparsity} --out {output.ckpt} > {log} 2>&1"


ruleorder: disp_search > prune
