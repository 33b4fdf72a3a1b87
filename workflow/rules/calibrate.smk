# Stage `calibrate`: per-layer activation statistics of the dense model (float64).


rule calibrate:
    input:
        model="resources/models/{model}",
        samples="resources/data/{model}/calib/{calib}.safetensors",
    output:
        stats="results/{model}/calib/{calib}/stats.safetensors",
        meta="results/{model}/calib/{calib}/stats.json",
    params:
        batch_size=lambda wc: config["calibration"][wc.calib]["batch_size"],
    log:
        "logs/calibrate/{model}/{calib}.log",
    benchmark:
        "benchmarks/calibrate/{model}/{calib}.tsv"
    threads: 2
    resources:
        mem_mb=mem_for_model,
        runtime=runtime_for_model,
    shell:
        "python -m structprune --threads {threads} calibrate --model {input.model}"
        " --data {input.samples} --batch-size {params.batch_size} --out {output.stats} > {log} 2>&1"


rule gradients:
    """LLM-Pruner's Taylor saliencies: backprop of the next-token loss on the calibration samples."""
    input:
        model="resources/models/{model}",
        samples="resources/data/{model}/calib/{calib}.safetensors",
    output:
        stats="results/{model}/calib/{calib}/gradients.safetensors",
        meta="results/{model}/calib/{calib}/gradients.json",
    log:
        "logs/gradients/{model}/{calib}.log",
    benchmark:
        "benchmarks/gradients/{model}/{calib}.tsv"
    threads: 2
    resources:
        mem_mb=mem_for_model,
        runtime=runtime_for_model,
    shell:
        "python -m structprune --threads {threads} gradients --model {input.model}"
        " --data {input.samples} --out {output.stats} > {log} 2>&1"
