"""Comparison tables and plots from evaluation JSONs (shaped like the paper's Table 1)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from structprune.artifacts import atomic_file, read_json
from structprune.integrity import read_stage_json
from structprune.evaluate import main_accuracy
from structprune.uncertainty import (
    average_stderr, mean_stderr, paired_accuracy_difference, paired_perplexity_difference, perplexity_interval,
)

TASK_COLUMNS = {
    "boolq": "BoolQ", "piqa": "PIQA", "hellaswag": "HellaSwag", "winogrande": "WinoGrande",
    "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "openbookqa": "OBQA",
}
PPL_COLUMNS = {"wikitext2": "WikiText2", "ptb": "PTB"}
MARKERS = "osD^vP*Xh<>p"  # one per line, so lines of one colour stay apart


def row_from_eval(result: dict, labels: dict | None = None) -> dict:
    key = f"{result['method']}:{result['stage']}"
    row = {
        "Method": (labels or {}).get(key, result["method"]),
        "Calibration": result.get("calib", "none"),
        "Stage": result["stage"],
        "Sparsity (%)": result["sparsity"],
        "Params": result["parameters"]["total"],
        "Block params": result["parameters"]["decoder_blocks"],
    }
    for key, column in PPL_COLUMNS.items():
        if key in result["perplexity"]:
            row[column] = result["perplexity"][key]["ppl"]
    accuracies = []
    for key, column in TASK_COLUMNS.items():
        if key in result["zero_shot"]:
            row[column] = 100.0 * main_accuracy(result["zero_shot"][key])
            accuracies.append(row[column])
    if accuracies:
        row["Average"] = sum(accuracies) / len(accuracies)
    return row


def comparison_table(eval_paths: list[str | os.PathLike], labels: dict | None = None,
                     speed_paths: list[str | os.PathLike] = ()) -> pd.DataFrame:
    """One row per evaluation JSON, in the order given (dense first by convention); `labels`
    maps "method:stage" to the row's name; `speed_paths` add the measured speed columns."""
    results = [read_stage_json(path) for path in eval_paths]
    table = pd.DataFrame([row_from_eval(result, labels) for result in results])
    dense = table["Stage"] == "dense"
    table.insert(5, "Block params removed (%)", 0.0)
    table.insert(6, "All params removed (%)", 0.0)
    if dense.any():
        dense_blocks = table.loc[dense, "Block params"].iloc[0]
        dense_total = table.loc[dense, "Params"].iloc[0]
        table["Block params removed (%)"] = 100.0 * (1 - table["Block params"] / dense_blocks)
        table["All params removed (%)"] = 100.0 * (1 - table["Params"] / dense_total)
    return add_speed(add_uncertainty(table, results), results, [read_stage_json(path) for path in speed_paths])


SPEED_NOTE = (
    "Speed and memory (stage `speed`, structprune.speed), measured on the machine that ran the job, each checkpoint "
    "beside the dense model in one process, their measurements alternating (medians of the repeats) so that machine "
    "noise cancels in the ratios: `Prefill x` is tokens/s of one forward pass over a batch of prompts, `Decode x b1` "
    "and `Decode x bN` new tokens/s of greedy generation with the KV cache at batch 1 and N, `Peak mem x` weights plus "
    "the peak memory rise while generating at batch N; each as checkpoint / dense (> 1: faster or larger). "
    "`Weights (MB)` is the bytes of parameters and buffers."
)


LLAMACPP_NOTE = (
    "`llama.cpp prefill x` and `llama.cpp decode x`: the same checkpoint's GGUF export (stage `export`) timed in "
    "llama.cpp in the same job as the dense export, alternating (medians): tokens/s of one prompt and of single decode "
    "steps at batch 1, checkpoint / dense; `Dense llama.cpp decode (tok/s)` is the dense export's absolute figure."
)
MEASURED_COLUMNS = ("Weights (MB)", "Prefill x", "Peak mem x", "Dense decode b1 (tok/s)")  # + "Decode x b<N>"
LLAMACPP_COLUMNS = ("llama.cpp prefill x", "llama.cpp decode x", "Dense llama.cpp decode (tok/s)")


def add_speed(table: pd.DataFrame, results: list[dict], speeds: list[dict]) -> pd.DataFrame:
    """Speed columns for rows with a speed measurement (matched by checkpoint folder); the
    dense row gets its own figures (ratio 1) from any measurement."""
    if not speeds:
        return table
    table = table.copy()
    by_checkpoint = {str(Path(s["checkpoint"])): s["timing"] for s in speeds}
    batches = sorted(int(b) for b in speeds[0]["timing"]["dense"]["decode_tokens_per_s"])
    cpp_by_checkpoint = {str(Path(s["checkpoint"])): s["llamacpp"] for s in speeds if "llamacpp" in s}
    columns: dict[str, list] = {"Weights (MB)": [], "Prefill x": [], "Peak mem x": [],
                                **{f"Decode x b{b}": [] for b in batches}, "Dense decode b1 (tok/s)": [],
                                **({c: [] for c in LLAMACPP_COLUMNS} if cpp_by_checkpoint else {})}
    for result in results:
        if result["stage"] == "dense":
            measured, name = speeds[0]["timing"], "dense"
            cpp = next(iter(cpp_by_checkpoint.values()), None)
        else:
            measured, name = by_checkpoint.get(str(Path(result.get("checkpoint", "")))), "checkpoint"
            cpp = cpp_by_checkpoint.get(str(Path(result.get("checkpoint", ""))))
        if measured is None:
            for values in columns.values():
                values.append(np.nan)
            continue
        if cpp_by_checkpoint:
            ratios = {} if cpp is None else {k: 1.0 for k in cpp["ratio_to_dense"]} if name == "dense" else cpp["ratio_to_dense"]
            columns["llama.cpp prefill x"].append(ratios.get("prefill_tokens_per_s", np.nan))
            columns["llama.cpp decode x"].append(ratios.get("decode_tokens_per_s", np.nan))
            columns["Dense llama.cpp decode (tok/s)"].append(np.nan if cpp is None else cpp["timing"]["dense"]["decode_tokens_per_s"])
        figures = measured[name]
        ratio = figures["ratio_to_dense"]
        columns["Weights (MB)"].append(figures["weight_bytes"] / 2**20)
        columns["Prefill x"].append(ratio["prefill_tokens_per_s"])
        columns["Peak mem x"].append(ratio["peak_generation_bytes"])
        for b in batches:
            columns[f"Decode x b{b}"].append(ratio[f"decode_tokens_per_s_batch{b}"])
        columns["Dense decode b1 (tok/s)"].append(measured["dense"]["decode_tokens_per_s"][str(batches[0])])
    for name, values in columns.items():
        table[name] = values
    return table


def gguf_table(export_paths: list[str | os.PathLike], gguf_eval_paths: list[str | os.PathLike],
               eval_paths: list[str | os.PathLike], labels: dict | None = None) -> pd.DataFrame:
    """One row per GGUF export: architecture, size, whether llama.cpp's greedy continuation
    equals transformers', and (where measured) each perplexity in llama.cpp beside the
    checkpoint's own and their difference in %."""
    evals = {str(Path(r["checkpoint"])): r for r in map(read_stage_json, eval_paths)}
    gguf_evals = {str(Path(r["gguf"])): r for r in map(read_stage_json, gguf_eval_paths)}
    rows = []
    for path in export_paths:
        info = read_stage_json(path)
        result = evals.get(str(Path(info["checkpoint"])))
        key = f"{result['method']}:{result['stage']}" if result else ""
        row = {"Method": (labels or {}).get(key, result["method"] if result else info["checkpoint"]),
               "Stage": result["stage"] if result else "", "Sparsity (%)": result["sparsity"] if result else np.nan,
               "Architecture": info["architecture"], "Type": info["tensor_type"], "GGUF (MB)": info["bytes"] / 2**20,
               "Greedy agrees": "yes" if info["greedy_tokens_agree"] else "no"}
        measured = gguf_evals.get(str(Path(path).with_suffix(".gguf")))
        for key_, column in PPL_COLUMNS.items():
            if measured and result and key_ in measured["perplexity"] and key_ in result["perplexity"]:
                ours, theirs = measured["perplexity"][key_]["ppl"], result["perplexity"][key_]["ppl"]
                row[column] = theirs
                row[f"{column} llama.cpp"] = ours
                row[f"{column} diff (%)"] = 100.0 * (ours / theirs - 1)
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["Method", "Stage", "Sparsity (%)", "Architecture", "Type"])


GGUF_NOTE = (
    "Every checkpoint exported to GGUF (stage `export`, structprune.gguf_export): `llama` for uniform widths, `deci` "
    "for per-layer widths. Each file was loaded in llama.cpp (llama-cpp-python) and continued a fixed prompt greedily; "
    "`Greedy agrees` says whether its tokens equal transformers' from the checkpoint (float16 weights may flip a "
    "near-tie). Perplexities (first rows of the evaluation protocol, at the speed sparsities): the checkpoint's "
    "(transformers, float32) and the export's (llama.cpp), and their difference."
)


RECOVERY_NOTE = (
    "Rounding: the paper's pre-pruning recovery (`reconstruct: paper`, the w/ remedy rows) fits rounding into its "
    "weights by least squares, and at `recover.damp` 0.01 that flipped near-tied units on a CPU with other float32 "
    "kernels (WikiText-2 at 35 %: 592.14 against 566.97). At the damping used here (1.0, chosen on held-out "
    "calibration text) the plans are the same and every perplexity moves by less than 1e-5 relative under another "
    "instruction set and 1e-7 input perturbations: `results/bench/recovery_stability.md`, "
    "`scripts/recovery_stability.py`."
)

def uses_paper_recovery(eval_paths: list[str]) -> bool:
    """Whether a row of the table comes from the paper's recovery (its checkpoint's recipe)."""
    for path in eval_paths:
        result = read_stage_json(path)
        manifest = Path(result.get("checkpoint", "")) / "manifest.json"
        if result.get("stage") == "recovered" and manifest.is_file():
            if read_stage_json(manifest).get("parameters", {}).get("recipe", {}).get("reconstruct") == "paper":
                return True
    return False


SIGNIFICANCE_NOTE = (
    "Uncertainty: `Avg se` is the standard error of the average accuracy (per-task sample standard errors, "
    "tasks independent); `... 95% CI` are perplexity intervals from 10,000 bootstrap resamples of the evaluation "
    "windows. `vs dense` and `vs best peer` are paired differences on the same items (accuracy, points) or windows "
    "(perplexity, %): the best peer is the strongest non-`ours` method at the same sparsity (highest average, "
    "lowest perplexity). A `~` marks a difference that is not significant at 95 % (its paired bootstrap interval, "
    "10,000 resamples of items within each task or of windows, seed 0, covers zero)."
)


def _item_scores(result: dict) -> dict[str, tuple[list, np.ndarray]] | None:
    """task -> (doc ids, per-item main metric) when the evaluation kept them."""
    tasks = result.get("zero_shot") or {}
    if not tasks or any("items" not in metrics for metrics in tasks.values()):
        return None
    return {task: (m["items"]["doc_id"], np.asarray(m["items"]["score"], dtype=np.float64)) for task, m in tasks.items()}


def _window_nll(result: dict, dataset: str) -> np.ndarray | None:
    values = (result.get("perplexity") or {}).get(dataset, {}).get("window_nll")
    return None if values is None else np.asarray(values, dtype=np.float64)


def is_peer(result: dict) -> bool:
    """A pruned row of a method that is not ours (method keys of ours start with "ours")."""
    return result["stage"] != "dense" and not str(result["method"]).startswith("ours")


def _paired_items(a, b):
    """The two rows' item scores when they were scored on the same items, else None."""
    if a is None or b is None or sorted(a) != sorted(b) or any(a[t][0] != b[t][0] for t in a):
        return None
    return {t: a[t][1] for t in a}, {t: b[t][1] for t in b}


def _mark(value: float, difference, unit: str = "") -> str:
    return f"{value:+.1f}{unit}" + ("" if difference.significant else " ~")


def add_uncertainty(table: pd.DataFrame, results: list[dict]) -> pd.DataFrame:
    """The uncertainty columns (see SIGNIFICANCE_NOTE) for rows whose evaluation JSONs kept
    per-item scores and per-window NLL; cells stay empty where they did not."""
    table = table.copy()
    items = [_item_scores(r) for r in results]
    dense = next((i for i, r in enumerate(results) if r["stage"] == "dense"), None)
    if any(i is not None for i in items):
        table["Avg se"] = [
            100.0 * average_stderr([mean_stderr(scores) for _, scores in it.values()]) if it else np.nan for it in items
        ]
    for dataset, column in PPL_COLUMNS.items():
        windows = [_window_nll(r, dataset) for r in results]
        if all(w is None for w in windows):
            continue
        table[f"{column} 95% CI"] = [
            "" if w is None else "{:.1f}-{:.1f}".format(*perplexity_interval(w)) for w in windows
        ]
        peer_cells = []
        for i, r in enumerate(results):
            peers = [j for j, q in enumerate(results)
                     if j != i and is_peer(q) and q["sparsity"] == r["sparsity"] and windows[j] is not None
                     and windows[i] is not None and windows[j].shape == windows[i].shape]
            if r["stage"] == "dense" or not peers:
                peer_cells.append("")
                continue
            best = min(peers, key=lambda j: windows[j].mean())
            d = paired_perplexity_difference(windows[i], windows[best])
            peer_cells.append(_mark(100.0 * math.expm1(d.difference), d, "%"))
        table[f"{column} vs best peer"] = peer_cells
    if any(i is not None for i in items) and "Average" in table:
        versus_dense, versus_peer = [], []
        for i, r in enumerate(results):
            pair = _paired_items(items[i], items[dense]) if dense is not None and i != dense else None
            if pair is None:
                versus_dense.append("")
            else:
                d = paired_accuracy_difference(*pair)
                versus_dense.append(_mark(100.0 * d.difference, d))
            peers = {j: pair for j, q in enumerate(results) if j != i and is_peer(q) and q["sparsity"] == r["sparsity"]
                     and (pair := _paired_items(items[i], items[j])) is not None}
            if r["stage"] == "dense" or not peers:
                versus_peer.append("")
                continue
            best = max(peers, key=lambda j: table.loc[j, "Average"])
            d = paired_accuracy_difference(*peers[best])
            versus_peer.append(_mark(100.0 * d.difference, d))
        table["Avg vs dense"] = versus_dense
        table["Avg vs best peer"] = versus_peer
    return table


def selection_table(checkpoints: list[tuple[str, str | os.PathLike]], labels: dict | None = None) -> pd.DataFrame:
    """One row per candidate of every `select` checkpoint: its overrides of the method's recipe,
    its held-out calibration loss and perplexity, and which one the rule kept. `checkpoints`
    pairs "method:sparsity" with the checkpoint folder (its manifest.json)."""
    rows = []
    for key, folder in checkpoints:
        method, _, sparsity = key.rpartition(":")
        manifest = read_stage_json(Path(folder) / "manifest.json")
        for candidate in manifest["candidates"]:
            overrides = ", ".join(f"{k}={v}" for k, v in candidate["overrides"].items())
            rows.append({
                "Method": (labels or {}).get(f"{method}:pruned", method), "Sparsity (%)": int(sparsity),
                "Candidate": overrides, "Held-out loss": candidate["heldout_loss"],
                "Held-out PPL": candidate["heldout_ppl"], "Chosen": "yes" if candidate["chosen"] else "",
                "Not run": candidate["skipped"] or "", "Chosen at (%)": _chosen_at(manifest, sparsity),
                "Chosen here": ", ".join(manifest.get("parameters", {}).get("rechoose", [])),
            })
    return pd.DataFrame(rows, columns=["Method", "Sparsity (%)", "Candidate", "Held-out loss", "Held-out PPL", "Chosen",
                                       "Chosen at (%)", "Chosen here", "Not run"])


def _chosen_at(manifest: dict, sparsity: str) -> int:
    """The sparsity whose grid made the choice (select.at; older manifests: their own)."""
    return round(100 * manifest.get("parameters", {}).get("chosen_at", int(sparsity) / 100))


def to_markdown(table: pd.DataFrame, header: str) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in _formatted_cells(table)]
    return header.rstrip() + "\n\n" + "\n".join(lines) + "\n"


def _formatted_cells(table: pd.DataFrame) -> list[list[str]]:
    """Cell texts as in the Markdown table: parameter counts in millions, floats to 2 places."""
    formatted = table.copy()
    for column in formatted.columns:
        if column in ("Params", "Block params"):
            formatted[column] = formatted[column].map(lambda n: f"{n / 1e6:.2f}M")
        elif formatted[column].dtype.kind == "f":
            formatted[column] = formatted[column].map(lambda x: "" if pd.isna(x) else f"{x:.2f}")
    return [[str(v) for v in row] for row in formatted.itertuples(index=False)]


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    """A booktabs table (\\usepackage{booktabs}) to paste into a paper; numbers as in the Markdown."""
    numeric = [table[c].dtype.kind in "fi" for c in table.columns]
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(str(c)) for c in table.columns) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in _formatted_cells(table)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(table: pd.DataFrame, header: str) -> str:
    """A self-contained HTML page (no scripts, no external files) for Snakemake's report."""
    import html

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in _formatted_cells(table)
    )
    title, _, note = header.partition("\n")
    paragraphs = "".join(f"<p>{html.escape(p.strip())}</p>" for p in note.split("\n\n") if p.strip())
    style = ("table{border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}th{background:#eee}td:first-child,th:first-child{text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title.lstrip('# '))}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title.lstrip('# '))}</h1>{paragraphs}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n")


def write_table(
    table: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike, header: str,
    tex_path: str | os.PathLike | None = None, html_path: str | os.PathLike | None = None,
) -> None:
    """The same table as CSV (full precision), Markdown, and optionally LaTeX and HTML."""
    with atomic_file(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_file(md_path) as tmp:
        Path(tmp).write_text(to_markdown(table, header))
    if tex_path:
        with atomic_file(tex_path) as tmp:
            Path(tmp).write_text(to_latex(table, header.partition("\n")[0].lstrip("# ")))
    if html_path:
        with atomic_file(html_path) as tmp:
            Path(tmp).write_text(to_html(table, header))


def plot_perplexity(table: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Perplexity against the share of decoder-block parameters each checkpoint actually removed
    (not its target: LLM-Pruner's per-module rounding removes less than asked), one line per
    method/stage; dense drawn as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in PPL_COLUMNS.values() if c in table.columns]
    fig, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        dense = table[table["Stage"] == "dense"]
        if not dense.empty:
            ax.axhline(dense[column].iloc[0], color="black", linestyle="--", label="dense")
        others = table[table["Stage"] != "dense"]
        x = "Block params removed (%)" if "Block params removed (%)" in table else "Sparsity (%)"
        for (method, calib, stage), group in others.groupby(["Method", "Calibration", "Stage"], sort=False):
            group = group.sort_values("Sparsity (%)")
            label = method if calib == "none" else f"{method} ({calib})"
            label += "" if stage == "pruned" else f" {stage}"
            ax.plot(group[x], group[column], marker=MARKERS[len(ax.lines) % len(MARKERS)], label=label)
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


def plot_accuracy(table: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Average zero-shot accuracy with its standard error (error bars) per row, one panel per
    sparsity that has zero-shot results; the dense model's average as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = table[table["Average"].notna()] if "Average" in table else table.iloc[:0]
    pruned = scored[scored["Stage"] != "dense"]
    sparsities = sorted(pruned["Sparsity (%)"].unique())
    fig, axes = plt.subplots(1, max(1, len(sparsities)), figsize=(6 * max(1, len(sparsities)), 0.3 * max(len(g) for _, g in pruned.groupby("Sparsity (%)")) + 1.5) if len(pruned) else (6, 2), squeeze=False)
    for ax, sparsity in zip(axes[0], sparsities):
        rows = pruned[pruned["Sparsity (%)"] == sparsity].sort_values("Average")
        errors = rows["Avg se"] if "Avg se" in rows else None
        ax.barh([_row_label(r) for _, r in rows.iterrows()], rows["Average"], xerr=errors, color="tab:blue", alpha=0.7,
                error_kw={"capsize": 2, "elinewidth": 1})
        dense = scored[scored["Stage"] == "dense"]
        if not dense.empty:
            ax.axvline(dense["Average"].iloc[0], color="black", linestyle="--", label="dense")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{sparsity} % sparsity")
        ax.set_xlabel("average zero-shot accuracy (%), bars: 1 standard error")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)


def plot_tradeoff(table: pd.DataFrame, path: str | os.PathLike, title: str, speed: str = "Decode x b1") -> None:
    """Perplexity against measured speed-up (the trade-off a user picks from): one marker per
    checkpoint, colour by method, dense at 1x; log perplexity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    column = next((c for c in PPL_COLUMNS.values() if c in table.columns), None)
    if speed in table and column is not None:
        rows = table[table[speed].notna() & table[column].notna()]
        for index, (label, group) in enumerate(rows.groupby(rows.apply(_row_label, axis=1), sort=False)):
            ax.scatter(group[speed], group[column], marker=MARKERS[index % len(MARKERS)], label=label, s=36)
            for _, r in group.iterrows():
                ax.annotate(f"{int(r['Sparsity (%)'])}%", (r[speed], r[column]), fontsize=6, xytext=(3, 2),
                            textcoords="offset points")
        ax.set_yscale("log")
    ax.set_xlabel(f"measured speed-up over dense ({speed}: decode tokens/s, pruned / dense)")
    ax.set_ylabel(f"{column} perplexity (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)


def compute_time_summary(benchmark_paths: list[str | os.PathLike]) -> str:
    """Wall time per stage, summed over the Snakemake benchmark files that exist."""
    totals: dict[str, float] = {}
    for path in benchmark_paths:
        path = Path(path)
        if not path.is_file():
            continue
        parts = path.parts
        stage = parts[parts.index("benchmarks") + 1] if "benchmarks" in parts[:-1] else path.parent.name
        seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[-1])
        totals[stage] = totals.get(stage, 0.0) + seconds
    if not totals:
        return ""
    parts = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in totals.items())
    return f"Compute time of the jobs behind this table (Snakemake benchmarks): {parts}; total {sum(totals.values()):.0f} s."
