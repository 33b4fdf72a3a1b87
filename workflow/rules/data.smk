# Stage `data`: tokenised evaluation streams, calibration samples, zero-shot task files.


rule data_eval:
    input:
        model="resources/models/{model}",
    output:
        tokens="resources/data/{model}/eval/{dataset}.safetensors",
    params:
        split=config["evaluation"]["perplexity"]["split"],
        mirror=MIRROR_ARG,
    log:
        "logs/data/{model}/eval/{dataset}.log",
    benchmark:
        "benchmarks/data/{model}/eval/{dataset}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m structprune data-eval --dataset {wildcards.dataset} --split {params.split}"
        " --tokenizer {input.model} {params.mirror} --out {output.tokens} > {log} 2>&1"


rule data_calib:
    input:
        model="resources/models/{model}",
    output:
        samples="resources/data/{model}/calib/{calib}.safetensors",
    params:
        dataset=lambda wc: config["calibration"][wc.calib]["dataset"],
        split=lambda wc: config["calibration"][wc.calib]["split"],
        n_samples=lambda wc: config["calibration"][wc.calib]["n_samples"],
        seq_len=lambda wc: config["calibration"][wc.calib]["seq_len"],
        seed=lambda wc: config["calibration"][wc.calib]["seed"],
        mirror=MIRROR_ARG,
    log:
        "logs/data/{model}/calib/{calib}.log",
    benchmark:
        "benchmarks/data/{model}/calib/{calib}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m structprune data-calib --dataset {params.dataset} --split {params.split}"
        " --n-samples {params.n_samples} --seq-len {params.seq_len} --seed {params.seed}"
        " --tokenizer {input.model} {params.mirror} --out {output.samples} > {log} 2>&1"


rule data_task:
    output:
        records="resources/data/tasks/{task}.jsonl",
    params:
        mirror=MIRROR_ARG,
    log:
        "logs/data/tasks/{task}.log",
    benchmark:
        "benchmarks/data/tasks/{task}.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m structprune data-task --task {wildcards.task} {params.mirror}"
        " --out {output.records} > {log} 2>&1"
