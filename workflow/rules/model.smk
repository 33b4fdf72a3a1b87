# Stage `model`: materialise a configured model source as a plain safetensors checkpoint.


rule model:
    output:
        ckpt=directory("resources/models/{model}"),
    params:
        compute=compute_args,
        code=code_version("model"),
        source=lambda wc: model_cfg(wc)["source"],
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/model/{model}.log",
    benchmark:
        "benchmarks/model/{model}.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("model"),
    shell:
        "python -m structprune --threads {threads} {params.compute} model --source {params.source:q}"
        " --out {output.ckpt} > {log} 2>&1"
