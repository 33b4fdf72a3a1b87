"""Comparison tables from the stage JSONs (shaped like the paper's Table 1): perplexity,
accuracy, size and speed per row, with paired differences against dense and the best peer.
Text formats: formats.py; plots: plots.py; the notes above them: notes.py; the speed
columns: speedcols.py."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from structprune.evaluation.uncertainty import (
    average_stderr,
    mean_stderr,
    paired_accuracy_difference,
    paired_perplexity_difference,
    perplexity_interval,
)
from structprune.evaluation.zeroshot import main_accuracy
from structprune.io.integrity import read_stage_json
from structprune.report.speedcols import (  # noqa: F401 (the table's columns)
    LLAMACPP_COLUMNS,
    MEASURED_COLUMNS,
    add_speed,
)
from structprune.spec.catalog import PERPLEXITY_DATASETS, TASKS

TASK_COLUMNS = TASKS  # task -> column name
PPL_COLUMNS = PERPLEXITY_DATASETS  # dataset -> column name


def row_from_eval(result: dict, labels: dict | None = None, calibrations: dict | None = None) -> dict:
    """`calibrations`: "method:stage" -> what the Calibration cell says, where the path's set is
    not the whole story (a recovered row's recovery ran on another set)."""
    key = f"{result['method']}:{result['stage']}"
    row = {
        "Method": (labels or {}).get(key, result["method"]),
        "Calibration": (calibrations or {}).get(key, result.get("calib", "none")),
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
                     speed_paths: list[str | os.PathLike] = (), calibrations: dict | None = None) -> pd.DataFrame:
    """One row per evaluation JSON, in the order given (dense first by convention); `labels`
    maps "method:stage" to the row's name; `speed_paths` add the measured speed columns."""
    results = [read_stage_json(path) for path in eval_paths]
    table = pd.DataFrame([row_from_eval(result, labels, calibrations) for result in results])
    dense = table["Stage"] == "dense"
    table.insert(5, "Block params removed (%)", 0.0)
    table.insert(6, "All params removed (%)", 0.0)
    if dense.any():
        dense_blocks = table.loc[dense, "Block params"].iloc[0]
        dense_total = table.loc[dense, "Params"].iloc[0]
        table["Block params removed (%)"] = 100.0 * (1 - table["Block params"] / dense_blocks)
        table["All params removed (%)"] = 100.0 * (1 - table["Params"] / dense_total)
    return add_speed(add_uncertainty(table, results), results, [read_stage_json(path) for path in speed_paths])


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


SIZE_TOLERANCE = 0.5  # percentage points of block parameters: rows further apart in size are not compared


def same_size(table: pd.DataFrame, i: int, j: int) -> bool:
    """Rows i and j were pruned to the same nominal sparsity and removed the same share of
    block parameters within SIZE_TOLERANCE (a recipe that rounds per module misses its target)."""
    removed = table["Block params removed (%)"]
    return (table.loc[i, "Sparsity (%)"] == table.loc[j, "Sparsity (%)"]
            and abs(removed.iloc[i] - removed.iloc[j]) <= SIZE_TOLERANCE)


def _versus(value: float, difference, peer: str, unit: str = "") -> str:
    """A paired difference against the named best peer."""
    return f"{_mark(value, difference, unit)} vs {peer}"


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
        for task, column in TASK_COLUMNS.items():  # each task's accuracy with its own standard error
            if any(it and task in it for it in items):
                table[f"{column} se"] = [100.0 * mean_stderr(it[task][1]) if it and task in it else np.nan for it in items]
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
                     if j != i and is_peer(q) and same_size(table, i, j) and windows[j] is not None
                     and windows[i] is not None and windows[j].shape == windows[i].shape]
            if r["stage"] == "dense" or not peers:
                peer_cells.append("")
                continue
            best = min(peers, key=lambda j: windows[j].mean())
            d = paired_perplexity_difference(windows[i], windows[best])
            peer_cells.append(_versus(100.0 * math.expm1(d.difference), d, table.loc[best, "Method"], "%"))
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
            peers = {j: pair for j, q in enumerate(results) if j != i and is_peer(q) and same_size(table, i, j)
                     and (pair := _paired_items(items[i], items[j])) is not None}
            if r["stage"] == "dense" or not peers:
                versus_peer.append("")
                continue
            best = max(peers, key=lambda j: table.loc[j, "Average"])
            d = paired_accuracy_difference(*peers[best])
            versus_peer.append(_versus(100.0 * d.difference, d, table.loc[best, "Method"]))
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




