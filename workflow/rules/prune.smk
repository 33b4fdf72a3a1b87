# Stages `score` (sparsity-independent) and `prune` (one checkpoint per sparsity).


rule score:
    input:
        unpack(score_inputs),
    output:
        scores="results/{model}/{calib}/{method}/scores.safetensors",
    params:
        score=lambda wc: method_cfg(wc)["score"],
        options=method_options,
        stats=stats_arg,
    log:
        "logs/score/{model}/{calib}/{method}.log",
    benchmark:
        "benchmarks/score/{model}/{calib}/{method}.tsv"
    threads: 2
    resources:
        mem_mb=mem_for_model,
        runtime=runtime_for_model,
    shell:
        "python -m structprune --threads {threads} score --model {input.model} {params.stats}"
        " --method {params.score} {params.options} --out {output.scores} > {log} 2>&1"


rule prune:
    input:
        model="resources/models/{model}",
        scores="results/{model}/{calib}/{method}/scores.safetensors",
    output:
        ckpt=directory("results/{model}/{calib}/{method}/s{sparsity}/pruned"),
    params:
        sparsity=sparsity_fraction,
        heads=config["prune"]["heads"],
    log:
        "logs/prune/{model}/{calib}/{method}/s{sparsity}.log",
    benchmark:
        "benchmarks/prune/{model}/{calib}/{method}/s{sparsity}.tsv"
    threads: 2
    resources:
        mem_mb=mem_for_model,
        runtime=runtime_for_model,
    shell:
        "python -m structprune --threads {threads} prune --model {input.model}"
        " --scores {input.scores} --sparsity {params.sparsity} --heads {params.heads}"
        " --out {output.ckpt} > {log} 2>&1"
