"""Plots of the comparison table: perplexity and accuracy per sparsity, and perplexity
against measured speed-up."""

from __future__ import annotations

import os
import textwrap

import pandas as pd

from structprune.io.artifacts import atomic_file
from structprune.report.speedcols import is_fault_cell, parse_ratio_cell
from structprune.report.tables import PPL_COLUMNS

LABEL_WIDTH = 40  # characters per line of a row name on the accuracy plot
MARKERS = "osD^vP*Xh<>p"  # one per line, so lines of one colour stay apart
# tab20's dark shades first, then its light ones: 20 colours before any repeats
PALETTE = [f"tab20:{i}" for i in (*range(0, 20, 2), *range(1, 20, 2))]


def series_styles(table: pd.DataFrame) -> dict[str, tuple]:
    """One (colour, marker) per method row label, in table order, shared by every plot so a
    method looks the same in each (ours are drawn thicker by each plot, not recoloured)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    labels = list(dict.fromkeys(_row_label(r) for _, r in table.iterrows() if r["Stage"] != "dense"))
    return {label: (cmap(int(PALETTE[i % len(PALETTE)].split(":")[1])), MARKERS[i % len(MARKERS)])
            for i, label in enumerate(labels)}


def plot_perplexity(table: pd.DataFrame, path: str | os.PathLike, title: str, ours: frozenset = frozenset()) -> None:
    """Perplexity against the share of decoder-block parameters each checkpoint actually removed
    (not its target: LLM-Pruner's per-module rounding removes less than asked), one line per
    method/stage; dense drawn as a horizontal line. Rows of methods in `ours` (their Method
    labels) drawn thicker; rows never within 10x of dense faded, so the leaders stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in PPL_COLUMNS.values() if c in table.columns]
    styles = series_styles(table)
    fig, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        dense = table[table["Stage"] == "dense"]
        if not dense.empty:
            ax.axhline(dense[column].iloc[0], color="black", linestyle="--", label="dense")
        others = table[table["Stage"] != "dense"]
        x = "Block params removed (%)" if "Block params removed (%)" in table else "Sparsity (%)"
        limit = 10 * dense[column].iloc[0] if not dense.empty else float("inf")
        for label, group in others.groupby(others.apply(_row_label, axis=1), sort=False):
            group = group.sort_values("Sparsity (%)")
            colour, marker = styles[label]
            mine = group["Method"].iloc[0] in ours
            faded = bool((group[column] > limit).all())
            ax.plot(group[x], group[column], marker=marker, color=colour, label=label, alpha=0.35 if faded else 1.0,
                    linewidth=2.6 if mine else 1.2, markersize=7 if mine else 5, zorder=3 if mine else 2)
        ax.set_yscale("log")
        ax.set_xlabel("decoder-block parameters removed (%)" if x != "Sparsity (%)" else "sparsity (% of decoder-block parameters)")
        ax.set_ylabel(f"{column} perplexity (log scale)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)


def _row_label(row) -> str:
    label = row["Method"] if row["Calibration"] == "none" else f"{row['Method']} ({row['Calibration']})"
    return label + ("" if row["Stage"] in ("pruned", "dense") else f" {row['Stage']}")


def plot_accuracy(table: pd.DataFrame, path: str | os.PathLike, title: str, ours: frozenset = frozenset()) -> None:
    """Average zero-shot accuracy with its standard error (error bars) per row, one panel per
    sparsity that has zero-shot results; the dense model's average as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = series_styles(table)
    scored = table[table["Average"].notna()] if "Average" in table else table.iloc[:0]
    pruned = scored[scored["Stage"] != "dense"]
    sparsities = sorted(pruned["Sparsity (%)"].unique())
    # long row names wrap (a single line squeezed the bars to a sliver) and the figure grows with their lines
    wrapped = {label: textwrap.fill(label, LABEL_WIDTH) for label in (_row_label(r) for _, r in pruned.iterrows())}
    lines = max((sum(wrapped[_row_label(r)].count("\n") + 1 for _, r in g.iterrows())
                 for _, g in pruned.groupby("Sparsity (%)")), default=1)
    fig, axes = plt.subplots(1, max(1, len(sparsities)), figsize=(7 * max(1, len(sparsities)), 0.28 * lines + 1.8)
                             if len(pruned) else (6, 2), squeeze=False)
    for ax, sparsity in zip(axes[0], sparsities):
        rows = pruned[pruned["Sparsity (%)"] == sparsity].sort_values("Average")
        errors = rows["Avg se"] if "Avg se" in rows else None
        labels = [_row_label(r) for _, r in rows.iterrows()]
        ax.barh(range(len(labels)), rows["Average"], xerr=errors, color=[styles[label][0] for label in labels], alpha=0.85,
                error_kw={"capsize": 2, "elinewidth": 1})
        ax.set_yticks(range(len(labels)), [wrapped[label] for label in labels])
        for tick, method in zip(ax.get_yticklabels(), rows["Method"]):
            tick.set_fontweight("bold" if method in ours else "normal")
        dense = scored[scored["Stage"] == "dense"]
        if not dense.empty:
            ax.axvline(dense["Average"].iloc[0], color="black", linestyle="--", label="dense")
        # the dense line named in the title: a legend box inside the axes covered the lowest bar
        ax.set_title(f"{sparsity} % sparsity" + ("" if dense.empty else " (dashed: dense)"))
        ax.set_xlabel("average zero-shot accuracy (%), bars: 1 standard error")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)


def timed_elsewhere(table: pd.DataFrame, plotted) -> list[str]:
    """Methods with a transformers speed but no point on the llama.cpp plot (no GGUF export, as
    DISP-LLM's), so the plot can name what it leaves out."""
    if "Decode x b1" not in table:
        return []
    timed = table["Decode x b1"].notna() & table["Decode x b1"].astype(str).str.strip().ne("")
    absent = table[timed & ~table.index.isin(plotted) & table["Stage"].ne("dense")]
    return list(dict.fromkeys(absent["Method"]))


def plot_tradeoff(table: pd.DataFrame, path: str | os.PathLike, title: str, ours: frozenset = frozenset(),
                  speed: str | None = None, kinds: list[str | None] | None = None) -> None:
    """Perplexity against measured speed-up (the trade-off a user picks from): one marker per
    checkpoint, colour by method, dense at 1x, the speed-up's interval as a horizontal error
    bar (a fault, `!`, drawn hollow); log perplexity. The speed-up is llama.cpp's batch-1
    decode where the table has it (what a user serving the file gets), else transformers'.
    `kinds` (each row's kind of pruning, report/frontier.py): a method timed at several
    sparsities is joined by a line whose style says its kind (the speed frontier)."""
    speed = speed or ("llama.cpp decode x" if "llama.cpp decode x" in table else "Decode x b1")
    import matplotlib

    from structprune.report.frontier import KIND_LINES, line_caption, series_kind  # frontier.py imports this module

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    column = next((c for c in PPL_COLUMNS.values() if c in table.columns), None)
    rows, joined_kinds = table.iloc[:0], []
    if speed in table and column is not None:
        ratios = pd.DataFrame([parse_ratio_cell(c) for c in table[speed]], index=table.index,
                              columns=["median", "low", "high"])
        rows = table[ratios["median"].notna() & table[column].notna()]
        styles = series_styles(table)
        kind_of = dict(zip(table.index, kinds)) if kinds is not None else {}
        for label, group in rows.groupby(rows.apply(_row_label, axis=1), sort=False):
            x = ratios.loc[group.index]
            faults = group[speed].map(is_fault_cell).astype(bool)
            colour, marker = styles.get(label, ("black", "o"))
            kind = series_kind([kind_of.get(i) for i in group.index])
            if kind and len(group) > 1:
                joined_kinds.append(kind)
                joined = group.sort_values("Sparsity (%)").index
                ax.plot(x.loc[joined, "median"], group.loc[joined, column], linestyle=KIND_LINES.get(kind, ("-",))[0],
                        color=colour, linewidth=1.6 if group["Method"].iloc[0] in ours else 1.0, alpha=0.8)
            label = f"{label} [{kind}]" if kind else label
            ax.errorbar(x["median"], group[column], xerr=[x["median"] - x["low"], x["high"] - x["median"]],
                        fmt="none", ecolor=colour, elinewidth=0.8, capsize=2, alpha=0.6)
            size = 70 if group["Method"].iloc[0] in ours else 36
            ax.scatter(x["median"][~faults], group[column][~faults], marker=marker, s=size, color=colour,
                       label=label if (~faults).any() else None)
            if faults.any():
                ax.scatter(x["median"][faults], group[column][faults], marker=marker, s=size, facecolors="none",
                           edgecolors=colour, label=None if (~faults).any() else label)
            for i, r in group.iterrows():
                ax.annotate(f"{int(r['Sparsity (%)'])}%", (x.loc[i, "median"], r[column]), fontsize=6, xytext=(3, 2),
                            textcoords="offset points")
        ax.set_yscale("log")
    if rows.empty:  # say so rather than draw empty axes (speed off, or no checkpoint measured)
        ax.text(0.5, 0.5, "no speed measured in this run\n(evaluation.speed.enabled, evaluation.speed.sparsities)",
                ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.3")
        ax.set_xticks([])
        ax.set_yticks([])
    which = "llama.cpp" if speed.startswith("llama.cpp") else "transformers"
    xlabel = f"decode speed-up over dense ({which}, batch 1)\nbars: 95 % interval; hollow: above what the weights allow"
    if kinds is not None and rows["Sparsity (%)"].nunique() > 1 and (caption := line_caption(joined_kinds)):
        xlabel += "\n" + caption
    if which == "llama.cpp" and (names := timed_elsewhere(table, rows.index)):
        xlabel += "\nnot shown (no llama.cpp export; transformers speed in the table): " + "; ".join(names)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{column} perplexity (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    if not rows.empty:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    ax.set_title(title)
    if rows.empty:
        fig.tight_layout()  # else the axes keep their size and the tight box takes in the legend beside them
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)

