# Stage `recover`: layer-wise pruning with least-squares recovery ("w/ remedy" rows).


rule recover:
    input:
        model="resources/models/{model}",
        samples="resources/data/{model}/calib/{calib}.safetensors",
    output:
        ckpt=directory("results/{model}/{calib}/{method}/s{sparsity}/recovered"),
    params:
        compute=compute_args,
        code=code_version("recover"),
        score=lambda wc: method_cfg(wc)["score"],
        options=method_options,
        sparsity=sparsity_fraction,
        heads=config["prune"]["heads"],
        damp=config["recover"]["damp"],
        target=config["recover"]["target"],
        batch_size=config["recover"]["batch_size"],
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/recover/{model}/{calib}/{method}/s{sparsity}.log",
    benchmark:
        "benchmarks/recover/{model}/{calib}/{method}/s{sparsity}.tsv"
    threads: 2
    resources:
        **stage_resources("recover"),
    shell:
        "python -m structprune --threads {threads} {params.compute} recover --model {input.model}"
        " --data {input.samples} --method {params.score} {params.options}"
        " --sparsity {params.sparsity} --heads {params.heads} --damp {params.damp} --target {params.target}"
        " --batch-size {params.batch_size} --out {output.ckpt} > {log} 2>&1"
