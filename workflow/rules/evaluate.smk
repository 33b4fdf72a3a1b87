# Stage `evaluate`: perplexity and lm-eval zero-shot accuracy, one JSON per checkpoint.


rule evaluate_dense:
    input:
        unpack(eval_inputs),
        model="resources/models/{model}",
    output:
        result="results/{model}/dense/eval.json",
    params:
        compute=compute_args,
        code=code_version("evaluate"),
        data=eval_args,
        protocol=eval_protocol_args(),
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/evaluate/{model}/dense.log",
    benchmark:
        "benchmarks/evaluate/{model}/dense.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("evaluate"),
    shell:
        "python -m structprune --threads {threads} {params.compute} evaluate --model {input.model} {params.data}"
        " {params.protocol} --model-name {wildcards.model} --stage dense"
        " --out {output.result} > {log} 2>&1"


rule evaluate:
    input:
        unpack(eval_inputs),
        model="results/{model}/{calib}/{method}/s{sparsity}/{stage}",
    output:
        result="results/{model}/{calib}/{method}/s{sparsity}/eval/{stage}.json",
    params:
        compute=compute_args,
        code=code_version("evaluate"),
        data=eval_args,
        protocol=eval_protocol_args(),
    wildcard_constraints:
        stage="pruned|recovered",
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/evaluate/{model}/{calib}/{method}/s{sparsity}/{stage}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("evaluate"),
    shell:
        "python -m structprune --threads {threads} {params.compute} evaluate --model {input.model} {params.data}"
        " {params.protocol} --model-name {wildcards.model} --method {wildcards.method}"
        " --calib {wildcards.calib} --sparsity {wildcards.sparsity} --stage {wildcards.stage}"
        " --out {output.result} > {log} 2>&1"


rule speed:
    """What pruning buys, measured: prefill and decode tokens/s and memory of a checkpoint and
    of the dense model, alternating in one job so that machine noise cancels in the ratios; in
    transformers and, with export enabled, in llama.cpp (the two GGUF exports). The job takes
    every core Snakemake has, so nothing else runs while it measures; the measurement itself
    runs on evaluation.speed.threads threads."""
    input:
        unpack(speed_gguf_inputs),
        model="results/{model}/{calib}/{method}/s{sparsity}/{stage}",
        dense="resources/models/{model}",
    output:
        result="results/{model}/{calib}/{method}/s{sparsity}/speed/{stage}.json",
    params:
        compute=compute_args,
        code=code_version("speed"),
        protocol=speed_protocol_args(),
        gguf=speed_gguf_args,
        threads=speed_measure_threads,
    wildcard_constraints:
        stage="pruned|recovered",
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/speed/{model}/{calib}/{method}/s{sparsity}/{stage}.log",
    benchmark:
        "benchmarks/speed/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv"
    threads: speed_job_threads
    resources:
        **stage_resources("speed"),
    shell:
        "python -m structprune --threads {params.threads} {params.compute} speed --model {input.model} --dense {input.dense}"
        " {params.protocol} {params.gguf} --out {output.result} > {log} 2>&1"
