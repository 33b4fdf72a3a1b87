# Stage `report`: the comparison table (CSV, Markdown, LaTeX, HTML) and the
# perplexity-vs-sparsity plot per model. The HTML table and the plot are also
# registered for `snakemake --report report.html` (workflow/report/).
# The run record (results/runs/, not committed) says what the run used: config files,
# the resolved config, commit and versions. Being absent from a fresh clone, it also makes
# `make run` there rebuild everything behind the committed tables.


rule report:
    input:
        evals=model_evals,
        selected=model_selections,
        speeds=model_speeds,
        exports=model_exports,
        gguf_evals=model_gguf_evals,
        js_stats=algorithm2_statistics,
    output:
        headline=f"results/tables/{REPORT}.headline.md",
        gguf_csv=f"results/tables/{REPORT}.gguf.csv",
        gguf_md=f"results/tables/{REPORT}.gguf.md",
        selection_csv=f"results/tables/{REPORT}.selection.csv",
        selection_md=f"results/tables/{REPORT}.selection.md",
        csv=f"results/tables/{REPORT}.csv",
        md=f"results/tables/{REPORT}.md",
        tex=f"results/tables/{REPORT}.tex",
        html=report(
            f"results/tables/{REPORT}.html",
            caption="../report/table.rst",
            category="Comparison tables",
            labels={"model": "{model}", "figure": "table"},
        ),
        run=f"results/runs/{REPORT}.json",
        accuracy=report(
            f"results/plots/{REPORT}.accuracy.png",
            caption="../report/accuracy_plot.rst",
            category="Zero-shot accuracy",
            labels={"model": "{model}", "figure": "accuracy"},
        ),
        tradeoff=report(
            f"results/plots/{REPORT}.tradeoff.png",
            caption="../report/tradeoff_plot.rst",
            category="Perplexity vs speed",
            labels={"model": "{model}", "figure": "tradeoff"},
        ),
        plot=report(
            f"results/plots/{REPORT}.ppl.png",
            caption="../report/ppl_plot.rst",
            category="Perplexity vs sparsity",
            labels={"model": "{model}", "figure": "perplexity"},
        ),
    params:
        code=code_version("report"),
        stem=lambda wc: REPORT.format(model=wc.model),  # the README's headline markers name the table
        benchmarks=lambda wc: sh(*model_benchmarks(wc)),
        note=lambda wc: json.dumps(report_note(wc)),  # one line: the note's bullets are lines
        labels=lambda wc: label_args(wc.model),
        selection=selection_args,
        run_config=lambda wc: json.dumps(config, sort_keys=True, default=str),
        config_files=sh(*(workflow.overwrite_configfiles or ["config.yaml"])),
        algorithm2=lambda wc, input: sh(*[w for calib, path in zip(algorithm2_calibs(wc), input.js_stats)
                                          for w in ("--algorithm2-stats", f"{calib}={path}")]),
        gguf=lambda wc, input, output: sh("--exports", *input.exports, "--gguf-evals", *input.gguf_evals,
                                          "--gguf-csv", output.gguf_csv, "--gguf-md", output.gguf_md),
    conda:
        "../../envs/structprune.yaml"
    log:
        f"logs/report/{REPORT}.log",
    benchmark:
        f"benchmarks/report/{REPORT}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m structprune report --evals {input.evals} --speeds {input.speeds} --csv {output.csv} --md {output.md}"
        " --tex {output.tex} --html {output.html} --plot {output.plot} --plot-accuracy {output.accuracy}"
        " --plot-tradeoff {output.tradeoff} --headline {output.headline} --model-name {params.stem} --readme README.md"
        " --title 'structprune: {wildcards.model}' --note-json {params.note:q} {params.labels}"
        " --benchmarks {params.benchmarks} {params.selection} --selection-csv {output.selection_csv}"
        " --selection-md {output.selection_md} --run-record {output.run} --run-config {params.run_config:q}"
        " --config-files {params.config_files} {params.gguf} {params.algorithm2} > {log} 2>&1"
