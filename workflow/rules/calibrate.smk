# Stage `calibrate`: per-layer activation statistics of the dense model (float64).


rule calibrate:
    input:
        model="resources/models/{model}",
        samples="resources/data/{model}/calib/{calib}.safetensors",
    output:
        stats="results/{model}/calib/{calib}/stats.safetensors",
        meta="results/{model}/calib/{calib}/stats.json",
    params:
        compute=compute_args,
        code=code_version("calibrate"),
        batch_size=lambda wc: config["calibration"][wc.calib]["batch_size"],
        needs=lambda wc: calib_statistics_args(wc.calib),
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/calibrate/{model}/{calib}.log",
    benchmark:
        "benchmarks/calibrate/{model}/{calib}.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("calibrate"),
    shell:
        "python -m structprune --threads {threads} {params.compute} calibrate --model {input.model}"
        " --data {input.samples} --batch-size {params.batch_size} {params.needs} --out {output.stats} > {log} 2>&1"


rule gradients:
    """LLM-Pruner's Taylor saliencies: backprop of the next-token loss on the calibration samples."""
    input:
        model="resources/models/{model}",
        samples="resources/data/{model}/calib/{calib}.safetensors",
    output:
        stats="results/{model}/calib/{calib}/gradients.safetensors",
        meta="results/{model}/calib/{calib}/gradients.json",
    params:
        compute=compute_args,
        code=code_version("gradients"),
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/gradients/{model}/{calib}.log",
    benchmark:
        "benchmarks/gradients/{model}/{calib}.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("gradients"),
    shell:
        "python -m structprune --threads {threads} {params.compute} gradients --model {input.model}"
        " --data {input.samples} --out {output.stats} > {log} 2>&1"
