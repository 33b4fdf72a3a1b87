# Stage `model`: materialise a configured model source as a plain safetensors checkpoint.


rule model:
    output:
        ckpt=directory("resources/models/{model}"),
    params:
        source=lambda wc: model_cfg(wc)["source"],
    log:
        "logs/model/{model}.log",
    benchmark:
        "benchmarks/model/{model}.tsv"
    threads: 2
    resources:
        mem_mb=mem_for_model,
        runtime=runtime_for_model,
    shell:
        "python -m structprune --threads {threads} model --source {params.source:q}"
        " --out {output.ckpt} > {log} 2>&1"
