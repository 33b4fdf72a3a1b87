"""The headline a newcomer reads first (issue #30): per sparsity, our best row against the best
peer of the same size, with dense for scale; the zero-shot average and llama.cpp's decode
speed-up where they were measured. Written by the report stage next to the table and, between
markers, into the README, so the README's numbers are always the committed table's.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from structprune.io.artifacts import atomic_file
from structprune.report.frontier import frontier_summary
from structprune.report.tables import same_size

START, END = "<!-- headline:{model} -->", "<!-- /headline -->"


def _ppl(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _best(rows: pd.DataFrame) -> pd.Series | None:
    rows = rows.dropna(subset=["WikiText2"])
    return None if rows.empty else rows.loc[rows["WikiText2"].idxmin()]


def headline(table: pd.DataFrame, keys: list[str], model: str, items: str | None = None,
             windows: str | None = None, kinds: list[str | None] | None = None) -> str:
    """Markdown: one line per sparsity (our lowest-WikiText-2 row, the lowest peer within
    SIZE_TOLERANCE points of its size), then the zero-shot and llama.cpp figures of those rows
    where the table has them. `keys`: each row's method key (ours start with "ours"); `items`:
    which task items were scored, when not all (the accuracies are then indicative); `windows`:
    which perplexity windows, in words; `kinds`: each row's kind of pruning, for the speed
    frontier (frontier.py) when llama.cpp timed more than one sparsity."""
    table = table.assign(_key=keys)
    dense = table[table["Stage"] == "dense"].iloc[0]
    scored = f", {windows}" if windows else ""
    lines = [f"**{model}**, perplexity (lower is better{scored}; dense: WikiText-2 {_ppl(dense.get('WikiText2'))}, "
             f"PTB {_ppl(dense.get('PTB'))}):", "",
             "| Sparsity | Ours (best row) | WikiText-2 | PTB | Best peer, same size (by WikiText-2) | WikiText-2 | PTB |",
             "|---|---|---|---|---|---|---|"]
    extras = []
    for sparsity in sorted(s for s in table["Sparsity (%)"].unique() if s):
        rows = table[table["Sparsity (%)"] == sparsity]
        ours = _best(rows[rows["_key"].str.startswith("ours")])
        if ours is None:
            continue
        peers = rows[[not key.startswith("ours") and stage != "dense" and same_size(table, ours.name, j)
                      for j, key, stage in zip(rows.index, rows["_key"], rows["Stage"])]]
        peer = _best(peers)
        lines.append(f"| {sparsity} % | {ours['Method']} | **{_ppl(ours['WikiText2'])}** | {_ppl(ours.get('PTB'))} | "
                     + (f"{peer['Method']} | {_ppl(peer['WikiText2'])} | {_ppl(peer.get('PTB'))} |" if peer is not None
                        else "none of this size | | |"))
        compared = [r for r in (ours, peer, dense) if r is not None]
        if "Average" in table and not pd.isna(ours.get("Average")):
            parts = [f"{r['Method']} {r['Average']:.1f}" + (f" (se {r['Avg se']:.1f})" if "Avg se" in r and not pd.isna(r["Avg se"]) else "")
                     for r in compared if not pd.isna(r.get("Average"))]
            sample = f" on {items} (a small sample: indicative only)" if items else ""
            extras.append(f"- Zero-shot average accuracy at {sparsity} %{sample}: " + ", ".join(parts) + ".")
        if "llama.cpp decode x" in table and isinstance(ours.get("llama.cpp decode x"), str) and ours["llama.cpp decode x"]:
            parts = [f"{r['Method']} {r['llama.cpp decode x']}" for r in (ours, peer) if r is not None
                     and isinstance(r.get("llama.cpp decode x"), str) and r["llama.cpp decode x"]]
            extras.append(f"- llama.cpp decode speed-up over dense at {sparsity} %: " + ", ".join(parts) + ".")
    text = "\n".join(lines + ([""] + extras if extras else [])) + "\n"
    summary = frontier_summary(table, kinds) if kinds is not None else ""
    return text + ("\n" + summary if summary else "")


def refresh_readme(readme: str | Path, model: str, text: str) -> bool:
    """Replace what stands between the model's headline markers in `readme` (atomically); False
    when the file or its markers are absent (a config whose model the README does not show)."""
    path = Path(readme)
    if not path.is_file():
        return False
    content = path.read_text()
    start = START.format(model=model)
    if start not in content or END not in content[content.index(start):]:
        return False
    head, rest = content.split(start, 1)
    _, tail = rest.split(END, 1)
    with atomic_file(path) as tmp:
        Path(tmp).write_text(f"{head}{start}\n{text}{END}{tail}")
    return True
