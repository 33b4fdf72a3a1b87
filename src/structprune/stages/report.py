"""The report stage: comparison tables, plots and the run record from the stage JSONs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from structprune.stages.argtypes import (
    key_value,
)

log = logging.getLogger("structprune")

HELP = "comparison table and plot from evaluation JSONs"


def arguments(parser) -> None:
    parser.add_argument("--evals", nargs="+", required=True)
    parser.add_argument("--speeds", nargs="*", default=[], help="speed JSONs of the checkpoints (stage speed)")
    parser.add_argument("--exports", nargs="*", default=[], help="export JSONs (stage export)")
    parser.add_argument("--gguf-evals", nargs="*", default=[], help="llama.cpp perplexity JSONs (stage evaluate_gguf)")
    parser.add_argument("--gguf-csv", default=None)
    parser.add_argument("--gguf-md", default=None, help="write the GGUF export table here (with --gguf-csv)")
    parser.add_argument("--plot-accuracy", default=None, help="also plot average accuracy with error bars per sparsity")
    parser.add_argument("--plot-tradeoff", default=None, help="also plot perplexity against measured decode speed-up")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--md", required=True)
    parser.add_argument("--tex", default=None, help="also write the table as LaTeX (booktabs)")
    parser.add_argument("--html", default=None, help="also write the table as a self-contained HTML page")
    parser.add_argument("--plot", default=None)
    parser.add_argument("--title", default="structprune comparison")
    parser.add_argument("--note", default="", help="the protocol note under the title (Markdown)")
    parser.add_argument("--note-json", default=None, help="the same as a JSON string (the workflow's: one shell line)")
    parser.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark TSVs to summarise")
    parser.add_argument("--selection", type=key_value, action="append", default=[], metavar="METHOD:SPARSITY=CHECKPOINT",
                   help="a select checkpoint whose candidates go into the selection table")
    parser.add_argument("--selection-csv", default=None)
    parser.add_argument("--selection-md", default=None)
    parser.add_argument("--label", type=key_value, action="append", default=[], metavar="METHOD:STAGE=LABEL",
                   help="the row name of a method's stage in the table")
    parser.add_argument("--calibration", type=key_value, action="append", default=[], metavar="METHOD:STAGE=TEXT",
                        help="the Calibration cell of a method's stage, where it is not the path's set alone")
    parser.add_argument("--headline", default=None, help="also write the headline (our best row against the best "
                        "same-size peer per sparsity) here, in Markdown")
    parser.add_argument("--model-name", default="model", help="the model's name in the headline and README markers")
    parser.add_argument("--readme", default=None, help="refresh the headline between this README's markers "
                        "<!-- headline:MODEL --> and <!-- /headline --> (nothing happens without them)")
    parser.add_argument("--algorithm2-stats", type=key_value, action="append", default=[], metavar="CALIB=STATS",
                        help="dense statistics of a calibration set whose rows use Algorithm 2: the note counts its candidates")
    parser.add_argument("--run-record", default=None, help="also write what the run used (config, commit, versions) here")
    parser.add_argument("--run-config", default="{}", help="the run's configuration as JSON (for --run-record)")
    parser.add_argument("--config-files", nargs="*", default=[], help="the config files the run read (for --run-record)")


def run(args) -> None:
    from structprune.report.formats import write_table
    from structprune.report.notes import GGUF_NOTE, NO_GGUF_NOTE, SELECTION_NOTE, table_header
    from structprune.report.plots import plot_accuracy, plot_perplexity, plot_tradeoff
    from structprune.report.tables import comparison_table, gguf_table, selection_table

    if args.note_json is not None:
        args.note = json.loads(args.note_json)
    if args.algorithm2_stats:
        from structprune.report.algorithm2 import algorithm2_fact
        from structprune.report.protocol import with_facts

        if fact := algorithm2_fact(json.loads(args.run_config), dict(args.algorithm2_stats)):
            args.note = with_facts(args.note, [fact])
    table = comparison_table(args.evals, dict(args.label), args.speeds, dict(args.calibration))
    header = table_header(args.title, args.note, table, args.evals, args.benchmarks)
    from structprune.report.tables import PPL_COLUMNS, TASK_COLUMNS

    best = (set(PPL_COLUMNS.values()), {*TASK_COLUMNS.values(), "Average"})  # lower / higher is better
    write_table(table, args.csv, args.md, header, args.tex, args.html, best=best)
    if args.selection_md:
        chosen = selection_table(args.selection, dict(args.label))
        write_table(chosen, args.selection_csv, args.selection_md, f"# {args.title}: held-out selection\n\n{SELECTION_NOTE}")
    if args.gguf_md:
        exports = gguf_table(args.exports, args.gguf_evals, args.evals, dict(args.label))
        note = GGUF_NOTE if args.exports else NO_GGUF_NOTE  # a run without exports: say so, not "every checkpoint"
        write_table(exports, args.gguf_csv, args.gguf_md, f"# {args.title}: GGUF exports for llama.cpp\n\n{note}")
    from structprune.io.integrity import read_stage_json
    from structprune.report.frontier import row_kinds

    evals = [read_stage_json(path) for path in args.evals]
    keys = [record["method"] for record in evals]  # each row's method key: ours start with "ours"
    chosen_recipes = {}  # a select row's kind is its chosen candidate's (a depth share makes it width + depth)
    for key, folder in args.selection:
        method, _, sparsity = key.rpartition(":")
        chosen_recipes[(method, int(sparsity))] = read_stage_json(Path(folder) / "manifest.json").get("recipe")
    kinds = row_kinds(keys, json.loads(args.run_config), [int(r["sparsity"]) for r in evals], chosen_recipes)
    if args.headline:
        write_headline(table, keys, kinds, args)
    ours = frozenset(label for label, key in zip(table["Method"], keys) if str(key).startswith("ours"))
    for path, plot in ((args.plot, plot_perplexity), (args.plot_accuracy, plot_accuracy)):
        if path:
            plot(table, path, args.title, ours)
    if args.plot_tradeoff:
        plot_tradeoff(table, args.plot_tradeoff, args.title, ours, kinds=kinds)
    if args.run_record:
        from structprune.io.artifacts import git_commit, package_versions, write_json

        write_json(args.run_record, {
            "title": args.title, "config_files": args.config_files, "config": json.loads(args.run_config),
            "git_commit": git_commit(), "versions": package_versions(), "evals": args.evals,
        })
    log.info("table with %d rows -> %s, %s", len(table), args.csv, args.md)


def write_headline(table, keys: list[str], kinds: list[str | None], args) -> None:
    from pathlib import Path

    from structprune.io.artifacts import atomic_file
    from structprune.report.headline import headline, refresh_readme
    from structprune.report.protocol import perplexity_windows_text, task_items_text

    evaluation = json.loads(args.run_config).get("evaluation") or {}
    items = task_items_text(evaluation) if evaluation.get("limit") else None
    windows = perplexity_windows_text(evaluation["perplexity"]) if evaluation.get("perplexity") else None
    text = headline(table, keys, args.model_name, items, windows, kinds)
    with atomic_file(args.headline) as tmp:
        Path(tmp).write_text(text)
    if args.readme and refresh_readme(args.readme, args.model_name, text):
        log.info("headline refreshed in %s", args.readme)
