# Stage `report`: the comparison table (CSV, Markdown, LaTeX, HTML) and the
# perplexity-vs-sparsity plot per model. The HTML table and the plot are also
# registered for `snakemake --report report.html` (workflow/report/).


rule report:
    input:
        evals=model_evals,
        selected=model_selections,
    output:
        selection_csv="results/tables/{model}.selection.csv",
        selection_md="results/tables/{model}.selection.md",
        csv="results/tables/{model}.csv",
        md="results/tables/{model}.md",
        tex="results/tables/{model}.tex",
        html=report(
            "results/tables/{model}.html",
            caption="../report/table.rst",
            category="Comparison tables",
            labels={"model": "{model}", "figure": "table"},
        ),
        plot=report(
            "results/plots/{model}.ppl.png",
            caption="../report/ppl_plot.rst",
            category="Perplexity vs sparsity",
            labels={"model": "{model}", "figure": "perplexity"},
        ),
    params:
        code=code_version("report"),
        benchmarks=lambda wc: " ".join(model_benchmarks(wc)),
        note=lambda wc: table_note(wc.model),
        labels=lambda wc: label_args(wc.model),
        selection=lambda wc: " ".join(f"--selection {m}:{s}={path}" for m, s, path in selection_rows(wc.model)),
    conda:
        "../../envs/structprune.yaml"
    log:
        "logs/report/{model}.log",
    benchmark:
        "benchmarks/report/{model}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m structprune report --evals {input.evals} --csv {output.csv} --md {output.md}"
        " --tex {output.tex} --html {output.html} --plot {output.plot}"
        " --title 'structprune: {wildcards.model}' --note {params.note:q} {params.labels}"
        " --benchmarks {params.benchmarks} {params.selection} --selection-csv {output.selection_csv}"
        " --selection-md {output.selection_md} > {log} 2>&1"
