# Stage `data`: tokenised evaluation streams, calibration samples, zero-shot task files.


rule data_eval:
    input:
        model="resources/models/{model}",
    output:
        tokens="resources/data/{model}/eval/{dataset}.safetensors",
    params:
        code=code_version("data-eval"),
        split=lambda wc: sh(eval_split(wc.dataset)),
        mirror=MIRROR_ARG,
    conda:
        "../../envs/structprune.yaml"
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
        compute=compute_args,
        code=code_version("data-calib"),
        dataset=lambda wc: calib_cfg(wc)["dataset"],
        n_samples=lambda wc: calib_cfg(wc)["n_samples"],
        seq_len=lambda wc: calib_cfg(wc)["seq_len"],
        seed=lambda wc: calib_cfg(wc)["seed"],
        source=calib_source_args,
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/data/{model}/calib/{calib}.log",
    benchmark:
        "benchmarks/data/{model}/calib/{calib}.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("data_calib"),
    shell:
        "python -m structprune --threads {threads} {params.compute} data-calib --dataset {params.dataset}"
        " --n-samples {params.n_samples} --seq-len {params.seq_len} --seed {params.seed}"
        " {params.source} --model {input.model} --out {output.samples} > {log} 2>&1"


rule data_task:
    output:
        records="resources/data/tasks/{task}.jsonl",
    params:
        code=code_version("data-task"),
        mirror=MIRROR_ARG,
    conda:
        "../../envs/structprune.yaml"
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


rule data_heldout:
    """Held-out calibration text for select: windows of the fit sets' text that none of their
    windows covers (self-generated fit sets: fresh samples under another seed)."""
    input:
        unpack(heldout_inputs),
    output:
        samples="resources/data/{model}/heldout/{heldout}.safetensors",
    params:
        compute=compute_args,
        code=code_version("data-heldout"),
        n_samples=lambda wc: heldout_cfg(wc)["n_samples"],
        seq_len=lambda wc: heldout_cfg(wc)["seq_len"],
        seed=lambda wc: heldout_cfg(wc)["seed"],
        source=heldout_source_args,
    wildcard_constraints:
        heldout=r"[A-Za-z0-9_.-]+",
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/data/{model}/heldout/{heldout}.log",
    benchmark:
        "benchmarks/data/{model}/heldout/{heldout}.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("data_calib"),
    shell:
        "python -m structprune --threads {threads} {params.compute} data-heldout {params.source}"
        " --n-samples {params.n_samples} --seq-len {params.seq_len} --seed {params.seed}"
        " --exclude {input.fit} --model {input.model} --out {output.samples} > {log} 2>&1"
