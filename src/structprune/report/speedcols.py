"""The comparison table's speed columns from the speed JSONs: each ratio as its median with
the order-statistic interval, marked where the interval covers 1 (`~`, as the table's
other differences) and where it lies above what the weights allow (`!`: a measurement
fault, never a gain); the bounds in their own columns. The plot reads the cells back."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

MEASURED_COLUMNS = ("Weights (MB)", "Prefill x", "Peak mem x", "Dense decode b1 (tok/s)")  # + "Decode x b<N>"
LLAMACPP_COLUMNS = ("llama.cpp prefill x", "llama.cpp decode x", "Dense llama.cpp decode (tok/s)")
BOUND_COLUMNS = ("Prefill bound x", "Decode bound x")
RATIO_COLUMNS = ("Prefill x", "llama.cpp prefill x", "llama.cpp decode x")  # + "Decode x b<N>": text cells
LEVEL = 0.95  # the intervals' coverage; fewer repeats than that allows: the cell says what it has
FAULT_MARK = " !"  # after a ratio whose interval lies above what the weights allow


def ratio_cell(entry: dict | None, ratio: float | None = None) -> str:
    """"1.21 (1.15-1.27)", with ", 88 %" when the interval covers less than LEVEL, " ~" when it
    covers 1 and " !" when it is a fault; a bare ratio from a JSON without per-repeat figures."""
    if entry is None:
        return "" if ratio is None or np.isnan(ratio) else f"{ratio:.2f}"
    coverage = "" if entry["coverage"] >= LEVEL else f", {100 * entry['coverage']:.0f} %"
    cell = f"{entry['median']:.2f} ({entry['low']:.2f}-{entry['high']:.2f}{coverage})"
    cell += " ~" if entry["low"] <= 1.0 <= entry["high"] else ""
    return cell + (FAULT_MARK if entry.get("fault") else "")


def is_fault_cell(cell) -> bool:
    """Whether a ratio cell carries the fault mark (the plot draws it hollow, the headline names it)."""
    return str(cell).rstrip().endswith(FAULT_MARK.strip())


CELL = re.compile(r"^\s*([\d.]+)(?:\s*\(([\d.]+)-([\d.]+))?")


def parse_ratio_cell(cell) -> tuple[float, float, float]:
    """(median, low, high) of a ratio cell or a plain number (low = high = median without an interval)."""
    if isinstance(cell, (int, float)):
        return float(cell), float(cell), float(cell)
    found = CELL.match(str(cell))
    if not found:
        return np.nan, np.nan, np.nan
    median = float(found.group(1))
    return median, float(found.group(2) or median), float(found.group(3) or median)


def _cell(source: dict | None, key: str, dense: bool) -> str:
    """The ratio cell of `key` from a timing entry or the llama.cpp block (dense row: 1)."""
    if source is None:
        return ""
    if dense:
        return "1.00"
    entry = (source.get("ratio_intervals") or {}).get(key)
    return ratio_cell(entry, source["ratio_to_dense"].get(key, np.nan))


def _bound(figures: dict, key: str) -> float:
    return (figures.get("ratio_intervals") or {}).get(key, {}).get("bound", np.nan)


def add_speed(table: pd.DataFrame, results: list[dict], speeds: list[dict]) -> pd.DataFrame:
    """Speed columns for rows with a speed measurement (matched by checkpoint folder); the
    dense row gets its own figures (ratio 1) from any measurement."""
    if not speeds:
        return table
    table = table.copy()
    by_checkpoint = {str(Path(s["checkpoint"])): s["timing"] for s in speeds}
    batches = sorted(int(b) for b in speeds[0]["timing"]["dense"]["decode_tokens_per_s"])
    cpp_by_checkpoint = {str(Path(s["checkpoint"])): s["llamacpp"] for s in speeds if "llamacpp" in s}
    bounded = any("ratio_intervals" in s["timing"]["checkpoint"] for s in speeds)
    columns: dict[str, list] = {"Weights (MB)": [], "Prefill x": [], "Peak mem x": [],
                                **{f"Decode x b{b}": [] for b in batches}, "Dense decode b1 (tok/s)": [],
                                **({c: [] for c in BOUND_COLUMNS} if bounded else {}),
                                **({c: [] for c in LLAMACPP_COLUMNS} if cpp_by_checkpoint else {})}
    for result in results:
        dense = result["stage"] == "dense"
        checkpoint = str(Path(result.get("checkpoint", "")))
        measured = speeds[0]["timing"] if dense else by_checkpoint.get(checkpoint)
        cpp = next(iter(cpp_by_checkpoint.values()), None) if dense else cpp_by_checkpoint.get(checkpoint)
        if measured is None:
            for name, values in columns.items():
                values.append("" if name in RATIO_COLUMNS or name.startswith("Decode x") else np.nan)
            continue
        figures = measured["dense" if dense else "checkpoint"]
        if cpp_by_checkpoint:
            columns["llama.cpp prefill x"].append(_cell(cpp, "prefill_tokens_per_s", dense))
            columns["llama.cpp decode x"].append(_cell(cpp, "decode_tokens_per_s", dense))
            columns["Dense llama.cpp decode (tok/s)"].append(np.nan if cpp is None else cpp["timing"]["dense"]["decode_tokens_per_s"])
        columns["Weights (MB)"].append(figures["weight_bytes"] / 2**20)
        columns["Prefill x"].append(_cell(figures, "prefill_tokens_per_s", dense))
        columns["Peak mem x"].append(figures["ratio_to_dense"]["peak_generation_bytes"])
        for b in batches:
            columns[f"Decode x b{b}"].append(_cell(figures, f"decode_tokens_per_s_batch{b}", dense))
        columns["Dense decode b1 (tok/s)"].append(measured["dense"]["decode_tokens_per_s"][str(batches[0])])
        if bounded:
            columns["Prefill bound x"].append(1.0 if dense else _bound(figures, "prefill_tokens_per_s"))
            columns["Decode bound x"].append(1.0 if dense else _bound(figures, f"decode_tokens_per_s_batch{batches[0]}"))
    for name, values in columns.items():
        table[name] = values
    return table
