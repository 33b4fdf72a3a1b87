"""Do two runs of one config measure the same speed-ups? (issue #34)

Reads the speed columns of two tables made by the same config in two fresh clones (the CSVs
the report writes) and writes a Markdown table: each row's ratio interval in both runs,
whether the two intervals overlap, and whether either lies above its bound (the `!` the
table would show). The dense model's absolute rates are listed too: a disturbed run shows
there first.

    python scripts/compare_speed_runs.py --table A=<clone A>/results/tables/smollm2-135m.quick.csv \
        --table B=<clone B>/results/tables/smollm2-135m.quick.csv --out results/checks/speed-reproducibility.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from structprune.report.speedcols import parse_ratio_cell  # noqa: E402

RATIOS = ("Prefill x", "Decode x b1", "llama.cpp prefill x", "llama.cpp decode x")
DENSE_RATES = ("Dense decode b1 (tok/s)", "Dense llama.cpp decode (tok/s)")


def measured_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The pruned rows with a speed measurement, keyed by (method, stage, sparsity)."""
    rows = table[(table["Stage"] != "dense") & table["Prefill x"].notna()]
    return rows.set_index(["Method", "Stage", "Sparsity (%)"])


def overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    return a[1] <= b[2] and b[1] <= a[2]


def compare(first: pd.DataFrame, second: pd.DataFrame) -> tuple[list[list[str]], int, int]:
    """Markdown rows (one per table row and ratio), the number of ratio pairs and of disagreements."""
    a, b = measured_rows(first), measured_rows(second)
    lines, pairs, apart = [], 0, 0
    for key in a.index.intersection(b.index):
        for column in (c for c in RATIOS if c in a.columns and c in b.columns):
            cell_a, cell_b = a.loc[key, column], b.loc[key, column]
            if pd.isna(cell_a) or pd.isna(cell_b) or str(cell_a) == "" or str(cell_b) == "":
                continue
            ra, rb = parse_ratio_cell(cell_a), parse_ratio_cell(cell_b)
            same = overlap(ra, rb)
            pairs, apart = pairs + 1, apart + (not same)
            faults = "yes" if "!" in str(cell_a) or "!" in str(cell_b) else ""
            lines.append([f"{key[0]} ({key[2]} %)", column, str(cell_a), str(cell_b), "yes" if same else "**no**", faults])
    return lines, pairs, apart


def dense_rates(table: pd.DataFrame) -> dict[str, str]:
    rows = measured_rows(table)
    return {c: f"{rows[c].min():.1f}-{rows[c].max():.1f}" for c in DENSE_RATES if c in rows.columns and rows[c].notna().any()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="append", required=True, metavar="NAME=CSV", help="exactly two")
    parser.add_argument("--about", action="append", default=[], help="a line saying how the runs were made")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if len(args.table) != 2:
        raise SystemExit("give --table twice: NAME=CSV of each run")
    (name_a, path_a), (name_b, path_b) = (t.split("=", 1) for t in args.table)
    first, second = pd.read_csv(path_a, keep_default_na=True), pd.read_csv(path_b, keep_default_na=True)
    lines, pairs, apart = compare(first, second)
    out = [f"# Speed ratios in two runs of one config: {name_a} and {name_b}", "",
           *[line for about in args.about for line in (about, "")],
           f"{pairs} ratio intervals compared; {pairs - apart} overlap, {apart} do not.", "",
           f"Dense model's absolute rates across each run's speed jobs: {name_a} {dense_rates(first)}; "
           f"{name_b} {dense_rates(second)}.", "",
           f"| row | ratio | {name_a} | {name_b} | intervals overlap | above its bound (`!`) |", "|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    Path(args.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
