"""Does the table's perplexity interval cover the whole split's perplexity? (issue #29)

The default run scores a sample of windows (evaluation.perplexity.max_tokens, placed by
evaluation.perplexity.windows) and reports a bootstrap interval over them. This check scores
every window of each split for the dense model and some pruned rows of a finished run, with
the `evaluate` stage itself (no --max-tokens), and writes a Markdown table: the row's sampled
value and interval from the committed CSV beside the full-split value, and whether the
interval covers it.

    python scripts/check_full_split.py --run-dir <a clone after `make run`> \
        --table results/tables/smollm2-135m.csv --model smollm2-135m \
        --row dense --row wikitext2/flap/s20/pruned --row wikitext2/ours-best-c/s20/pruned ... \
        --out results/checks/smollm2-135m.full-split.md

A row is `dense` or `<calib>/<method>/s<sparsity>/<stage>`, as the run's result folders are
named. Every command is run without a shell; the JSONs land beside the Markdown file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

DATASETS = {"wikitext2": "WikiText2", "ptb": "PTB"}  # dataset -> the table's column


def evaluate_whole_split(run_dir: Path, model: str, row: str, out: Path) -> dict:
    """Every window of each split (the evaluate stage without --max-tokens), cached in `out`."""
    if out.is_file():
        return json.loads(out.read_text())
    checkpoint = run_dir / ("resources/models/" + model if row == "dense" else f"results/{model}/{row}")
    data = [w for d in DATASETS for w in ("--ppl", f"{d}={run_dir}/resources/data/{model}/eval/{d}.safetensors")]
    stage = "dense" if row == "dense" else row.rsplit("/", 1)[1]
    command = [sys.executable, "-m", "structprune", "--threads", "2", "evaluate", "--model", str(checkpoint), *data,
               "--model-name", model, "--stage", stage, "--out", str(out)]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def match_row(table: pd.DataFrame, label: str, stage: str, sparsity: int) -> pd.Series:
    rows = table[(table["Method"] == label) & (table["Stage"] == stage) & (table["Sparsity (%)"] == sparsity)]
    if len(rows) != 1:
        raise SystemExit(f"no single table row for {label!r} {stage} at {sparsity} %: {len(rows)} found")
    return rows.iloc[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True, help="the committed comparison CSV of that run")
    parser.add_argument("--model", required=True)
    parser.add_argument("--row", action="append", required=True, help="dense or <calib>/<method>/s<sparsity>/<stage>")
    parser.add_argument("--label", action="append", default=[], metavar="METHOD=LABEL",
                        help="the table's label of a method key (the run's config labels)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    labels = dict(item.split("=", 1) for item in args.label)
    table = pd.read_csv(args.table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["| Row | Dataset | Sampled (table) | 95% CI (table) | Whole split | Windows | Covered |",
             "|---|---|---|---|---|---|---|"]
    covered_all = True
    for row in args.row:
        name = row.replace("/", "_")
        result = evaluate_whole_split(args.run_dir, args.model, row, args.out.parent / f"{args.model}.{name}.json")
        if row == "dense":
            committed, label = table[table["Stage"] == "dense"].iloc[0], "dense"
        else:
            _, method, sparsity, stage = row.split("/")
            label = labels.get(method, method)
            committed = match_row(table, label, stage, int(sparsity.removeprefix("s")))
        for dataset, column in DATASETS.items():
            low, high = map(float, str(committed[f"{column} 95% CI"]).split("-"))
            whole = result["perplexity"][dataset]["ppl"]
            covered = low <= whole <= high
            covered_all &= covered
            lines.append(f"| {label} {'' if row == 'dense' else row.split('/')[2]} | {column} | "
                         f"{committed[column]:.2f} | {low:.1f}-{high:.1f} | {whole:.2f} | "
                         f"{result['perplexity'][dataset]['windows']} | {'yes' if covered else '**no**'} |")
    header = (f"# Whole-split perplexity against the table's sampled interval ({args.model})\n\n"
              f"Made by `scripts/check_full_split.py` from the run in the table `{args.table}`: each row's checkpoint "
              "scored on every 128-token window of the split, beside the table's value from its sampled windows and "
              f"the table's bootstrap interval. All covered: {'yes' if covered_all else 'no'}.\n\n")
    args.out.write_text(header + "\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
