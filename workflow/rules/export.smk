# Stage `export`: every checkpoint (and the dense model) as a GGUF file that llama.cpp runs,
# checked there at once (loaded, a short greedy generation beside transformers'); stage
# `evaluate_gguf`: the export's perplexity in llama.cpp on the evaluate protocol (the datasets in
# export.perplexity), at the speed sparsities (its llama.cpp speed is measured by the `speed` rule, beside the dense export).
# The checkpoints' rules run the dense model's command on another input (`use rule ... with:`).


rule export_dense:
    input:
        model="resources/models/{model}",
    output:
        gguf="results/{model}/dense/gguf/model.gguf",
        info="results/{model}/dense/gguf/model.json",
    params:
        compute=compute_args,
        code=code_version("export"),
        export=export_args,
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/export/{model}/dense.log",
    benchmark:
        "benchmarks/export/{model}/dense.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("export"),
    shell:
        "python -m structprune --threads {threads} {params.compute} export --model {input.model} {params.export}"
        " --out {output.gguf} --out-json {output.info} > {log} 2>&1"


use rule export_dense as export with:
    input:
        model="results/{model}/{calib}/{method}/s{sparsity}/{stage}",
    output:
        gguf="results/{model}/{calib}/{method}/s{sparsity}/gguf/{stage}.gguf",
        info="results/{model}/{calib}/{method}/s{sparsity}/gguf/{stage}.json",
    wildcard_constraints:
        stage="pruned|recovered",
    log:
        "logs/export/{model}/{calib}/{method}/s{sparsity}/{stage}.log",
    benchmark:
        "benchmarks/export/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv"


rule evaluate_gguf_dense:
    input:
        unpack(gguf_ppl_inputs),
        gguf="results/{model}/dense/gguf/model.gguf",
    output:
        result="results/{model}/dense/eval/gguf.json",
    params:
        code=code_version("evaluate-gguf"),
        data=gguf_ppl_args,
        protocol=ppl_protocol_args(),
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/evaluate_gguf/{model}/dense.log",
    benchmark:
        "benchmarks/evaluate_gguf/{model}/dense.tsv"
    threads: config["compute"]["threads"]
    resources:
        **stage_resources("evaluate"),
    shell:
        "python -m structprune --threads {threads} evaluate-gguf --gguf {input.gguf} {params.data} {params.protocol}"
        " --out {output.result} > {log} 2>&1"


use rule evaluate_gguf_dense as evaluate_gguf with:
    input:
        unpack(gguf_ppl_inputs),
        gguf="results/{model}/{calib}/{method}/s{sparsity}/gguf/{stage}.gguf",
    output:
        result="results/{model}/{calib}/{method}/s{sparsity}/eval/{stage}.gguf.json",
    wildcard_constraints:
        stage="pruned|recovered",
    log:
        "logs/evaluate_gguf/{model}/{calib}/{method}/s{sparsity}/{stage}.log",
    benchmark:
        "benchmarks/evaluate_gguf/{model}/{calib}/{method}/s{sparsity}/{stage}.tsv"
