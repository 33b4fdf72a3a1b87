"""The speed frontier in words (issue #31): which kind of pruning (width, whole blocks, attention
/ MLP sublayers, width after whole blocks) is fastest in llama.cpp at which perplexity, read off the table at every
sparsity whose rows were timed. The headline carries it; the trade-off plot draws it."""

from __future__ import annotations

import pandas as pd

from structprune.report.plots import timed_elsewhere
from structprune.report.speedcols import is_fault_cell, parse_ratio_cell

# a recipe unit as the reader's word for the kind of pruning
KIND_WORDS = {"width": "width", "blocks": "depth: blocks", "sublayers": "depth: sublayers", "channels": "channels",
              "mixed": "width + depth"}
# each kind's line on the trade-off plot (plots.plot_tradeoff) and how the plot's caption names it
KIND_LINES = {KIND_WORDS["width"]: ("-", "solid width"), KIND_WORDS["blocks"]: ("--", "dashed whole blocks"),
              KIND_WORDS["sublayers"]: (":", "dotted sublayers"), KIND_WORDS["channels"]: ("-.", "dash-dot channels"),
              KIND_WORDS["mixed"]: ((0, (6, 2, 1, 2, 1, 2)), "dash-dot-dot width + depth")}
SPEED = "llama.cpp decode x"


def row_kinds(keys: list[str], run_config: dict, sparsities: list[int] | None = None,
              chosen: dict[tuple[str, int], dict] | None = None) -> list[str | None]:
    """Each row's kind of pruning from its recipe (dense: None): the unit, and "width + depth" for
    a width recipe with a depth share; a select row's recipe is the candidate `chosen` for its
    method and sparsity (its select manifest's recipe), else the method's config."""
    methods, chosen = run_config.get("methods") or {}, chosen or {}
    kinds = []
    for key, sparsity in zip(keys, sparsities or [None] * len(keys), strict=True):
        recipe = chosen.get((key, sparsity)) or methods.get(key)
        if key not in methods or recipe is None:
            kinds.append(None)
            continue
        unit = recipe.get("unit", "width")
        kinds.append(KIND_WORDS["mixed"] if unit == "width" and recipe.get("depth_share") else KIND_WORDS.get(unit))
    return kinds


def series_kind(kinds: list[str | None]) -> str | None:
    """The kind of one method's rows across sparsities: its one kind, or "width + depth" when a
    select row took whole blocks at some sparsities only (its line then mixes the two)."""
    distinct = list(dict.fromkeys(k for k in kinds if k))
    if len(distinct) < 2:
        return distinct[0] if distinct else None
    return KIND_WORDS["mixed"] if KIND_WORDS["mixed"] in distinct else " / ".join(distinct)


def line_caption(kinds: list[str | None]) -> str:
    """The trade-off plot's caption line for the line styles it drew (the kinds of joined series)."""
    names = [KIND_LINES[k][1] for k in dict.fromkeys(kinds) if k in KIND_LINES]
    return "lines join a method's sparsities: " + ", ".join(names) if names else ""


def _timed(table: pd.DataFrame) -> pd.DataFrame:
    """Pruned rows with a llama.cpp decode ratio and a WikiText-2 perplexity, with the ratio parsed."""
    if SPEED not in table or "WikiText2" not in table:
        return table.iloc[:0]
    ratios = pd.DataFrame([parse_ratio_cell(c) for c in table[SPEED]], index=table.index, columns=["x", "low", "high"])
    rows = table.join(ratios)
    return rows[rows["x"].notna() & rows["WikiText2"].notna() & rows["_kind"].notna()]


def _speed(row) -> str:
    """The decode cell as the table shows it, its `!` kept: a fastest row must not lose its flag."""
    return str(row[SPEED]).rstrip(" ~")


def frontier_summary(table: pd.DataFrame, kinds: list[str | None]) -> str:
    """Markdown, empty unless llama.cpp decode was timed at more than one sparsity (a frontier
    is a curve): per sparsity and kind, the row of lowest WikiText-2 perplexity and the fastest
    row; then, per sparsity, which kind the fastest row is and what its perplexity costs."""
    rows = _timed(table.assign(_kind=kinds))
    if rows["Sparsity (%)"].nunique() < 2:
        return ""
    lines = ["**Speed frontier** (llama.cpp batch-1 decode speed-up over dense with its 95 % interval, beside "
             "WikiText-2 perplexity; per sparsity and kind of pruning, the lowest-perplexity row and the fastest):", "",
             "| Sparsity | Kind | Lowest perplexity | WikiText-2 | Decode x | Fastest | WikiText-2 | Decode x |",
             "|---|---|---|---|---|---|---|---|"]
    sentences = []
    for sparsity in sorted(rows["Sparsity (%)"].unique()):
        at = rows[rows["Sparsity (%)"] == sparsity]
        for kind, group in at.groupby("_kind", sort=False):
            best, fastest = group.loc[group["WikiText2"].idxmin()], group.loc[group["x"].idxmax()]
            lines.append(f"| {sparsity:g} % | {kind} | {best['Method']} | {best['WikiText2']:.1f} | {_speed(best)} | "
                         f"{fastest['Method']} | {fastest['WikiText2']:.1f} | {_speed(fastest)} |")
        fastest, best = at.loc[at["x"].idxmax()], at.loc[at["WikiText2"].idxmin()]
        sentence = (f"- At {sparsity:g} %, the fastest row is {fastest['Method']} ({fastest['_kind']}, decode "
                    f"{_speed(fastest)}, WikiText-2 {fastest['WikiText2']:.1f})")
        if fastest.name == best.name:
            sentences.append(sentence + "; it also has the lowest perplexity.")
            continue
        overlap = best["high"] >= fastest["low"]
        cost = 100.0 * (fastest["WikiText2"] / best["WikiText2"] - 1.0)
        sentences.append(sentence + f"; the lowest perplexity is {best['Method']} ({best['_kind']}, "
                         f"{best['WikiText2']:.1f}, decode {_speed(best)}): "
                         + (f"their speed intervals overlap, so the faster row's {cost:+.0f} % perplexity buys no "
                            "measurable speed." if overlap else
                            f"{100.0 * (fastest['x'] / best['x'] - 1.0):+.0f} % decode speed for {cost:+.0f} % perplexity."))
    if rows[SPEED].map(is_fault_cell).any():
        sentences.append("- `!`: the measured speed-up lies above the bound the row's weights allow (the table's notes, "
                         "\"Bounds\"), so that row's lead is a measurement to repeat, not an established gain.")
    if untimed := timed_elsewhere(table, rows.index):
        sentences.append("- Not in llama.cpp (no GGUF export; their transformers speed is in the table): "
                         + "; ".join(untimed) + ".")
    return "\n".join(lines + [""] + sentences) + "\n"
