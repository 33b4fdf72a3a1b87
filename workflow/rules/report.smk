# Stage `report`: the comparison table (CSV + Markdown) and perplexity-vs-sparsity plot per model.


rule report:
    input:
        evals=model_evals,
    output:
        csv="results/tables/{model}.csv",
        md="results/tables/{model}.md",
        plot="results/plots/{model}.ppl.png",
    params:
        benchmarks=lambda wc: " ".join(model_benchmarks(wc)),
        note=lambda wc: table_note(wc.model),
    log:
        "logs/report/{model}.log",
    benchmark:
        "benchmarks/report/{model}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m structprune report --evals {input.evals} --csv {output.csv} --md {output.md}"
        " --plot {output.plot} --title 'structprune: {wildcards.model}' --note {params.note:q}"
        " --benchmarks {params.benchmarks} > {log} 2>&1"
