# Stages `score` (sparsity-independent) and `prune` (one checkpoint per sparsity).


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
    threads: 2
    resources:
        **stage_resources("score"),
    shell:
        "python -m structprune --threads {threads} {params.compute} score --model {input.model} {params.stats}"
        " --method {params.score} {params.options} --out {output.scores} > {log} 2>&1"


rule prune:
    """Uniform plan from a score file, with the prune section's settings (plain methods)."""
    wildcard_constraints:
        method=method_pattern(plain=True),
    input:
        model="resources/models/{model}",
        scores="results/{model}/{calib}/{method}/scores.safetensors",
    output:
        ckpt=directory("results/{model}/{calib}/{method}/s{sparsity}/pruned"),
    params:
        compute=compute_args,
        code=code_version("prune"),
        sparsity=sparsity_fraction,
        heads=config["prune"]["heads"],
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/prune/{model}/{calib}/{method}/s{sparsity}.log",
    benchmark:
        "benchmarks/prune/{model}/{calib}/{method}/s{sparsity}.tsv"
    threads: 2
    resources:
        **stage_resources("prune"),
    shell:
        "python -m structprune --threads {threads} {params.compute} prune --model {input.model}"
        " --scores {input.scores} --sparsity {params.sparsity} --heads {params.heads}"
        " --out {output.ckpt} > {log} 2>&1"


rule prune_planned:
    """Methods with their own plan or flow: FLAP's global structure and bias compensation,
    LLM-Pruner's layer range, Wanda-sp's sequential flow (docs/baselines.md)."""
    wildcard_constraints:
        method=method_pattern(plain=False),
    input:
        unpack(planned_inputs),
    output:
        ckpt=directory("results/{model}/{calib}/{method}/s{sparsity}/pruned"),
    params:
        compute=compute_args,
        code=code_version("prune"),
        sparsity=sparsity_fraction,
        args=planned_args,
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/prune/{model}/{calib}/{method}/s{sparsity}.log",
    benchmark:
        "benchmarks/prune/{model}/{calib}/{method}/s{sparsity}.tsv"
    threads: 2
    resources:
        **stage_resources("prune"),
    shell:
        "python -m structprune --threads {threads} {params.compute} prune --model {input.model} {params.args}"
        " --sparsity {params.sparsity} --out {output.ckpt} > {log} 2>&1"
