"""The table as text: markdown, LaTeX (booktabs), a self-contained HTML page; written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from structprune.io.artifacts import atomic_file

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def to_markdown(table: pd.DataFrame, header: str) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in _formatted_cells(table)]
    return header.rstrip() + "\n\n" + "\n".join(lines) + "\n"


# Columns the per-sparsity Markdown leaves to the CSV: what the section title or another column
# says already (the sparsity, the stage, parameter counts beside the removed share, the dense
# model's absolute speeds behind the ratios).
MARKDOWN_OMITS = ("Sparsity (%)", "Stage", "Params", "Block params", "All params removed (%)",
                  "Dense decode b1 (tok/s)", "Dense llama.cpp decode (tok/s)")


def to_markdown_by_sparsity(table: pd.DataFrame, header: str, lower: set[str], higher: set[str]) -> str:
    """The comparison table as one Markdown table per sparsity (the dense row at the top of
    each), the columns with no value for that sparsity's rows left out, the best pruned value of
    each column in `lower` (smallest) and `higher` (largest) in bold; then the header's notes.
    The CSV keeps every column of every row."""
    title, _, note = header.partition("\n")
    dense = table[table["Stage"] == "dense"]
    parts = [title.rstrip(), ""]
    for sparsity in sorted(s for s in table["Sparsity (%)"].unique() if s):
        rows = table[(table["Sparsity (%)"] == sparsity) & (table["Stage"] != "dense")]
        filled = [c for c in table.columns if c not in MARKDOWN_OMITS
                  and rows[c].map(lambda v: not (pd.isna(v) or v == "")).any()]
        group = pd.concat([dense, rows])[filled]
        cells = _formatted_cells(group)
        for column in filled:
            if (column in lower or column in higher) and len(rows) > 1:  # one row is no one's best
                values = pd.to_numeric(rows[column], errors="coerce")
                if values.notna().any():
                    best = values.idxmin() if column in lower else values.idxmax()
                    row, col = list(group.index).index(best), filled.index(column)
                    cells[row][col] = f"**{cells[row][col]}**"
        filled, cells = _with_standard_errors(filled, cells)
        parts += [f"## {sparsity} % sparsity", "", "| " + " | ".join(filled) + " |", "|" + "---|" * len(filled)]
        parts += ["| " + " | ".join(row) + " |" for row in cells] + [""]
    return "\n".join(parts) + (f"\n## How these numbers were made\n\n{note.strip()}\n" if note.strip() else "")


def _with_standard_errors(columns: list[str], cells: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Each accuracy and its standard error in one cell ("61.33 ± 8.9", the bold kept): the
    `X se` columns (`Avg se` for the Average) join the column they qualify."""
    se_of = {c: f"{c} se" if c != "Average" else "Avg se" for c in columns}
    joined = {c: se for c, se in se_of.items() if se in columns}
    for column, se in joined.items():
        value, error = columns.index(column), columns.index(se)
        for row in cells:
            if row[value].strip("*") and row[error]:
                bold = row[value].startswith("**")
                row[value] = f"{row[value].strip('*')} ± {row[error]}"
                row[value] = f"**{row[value]}**" if bold else row[value]
    drop = {columns.index(se) for se in joined.values()}
    names = [f"{c} ± se" if c in joined else c for c in columns]
    return ([c for i, c in enumerate(names) if i not in drop],
            [[v for i, v in enumerate(row) if i not in drop] for row in cells])


def _formatted_cells(table: pd.DataFrame) -> list[list[str]]:
    """Cell texts as in the Markdown table: parameter counts in millions, floats to 2 places."""
    formatted = table.copy()
    for column in formatted.columns:
        if column in ("Params", "Block params"):
            formatted[column] = formatted[column].map(lambda n: f"{n / 1e6:.2f}M")
        elif formatted[column].dtype.kind == "f":
            formatted[column] = formatted[column].map(lambda x: "" if pd.isna(x) else f"{x:.2f}")
        else:
            formatted[column] = formatted[column].map(lambda x: "" if x is None or (isinstance(x, float) and pd.isna(x)) else x)
    return [[str(v) for v in row] for row in formatted.itertuples(index=False)]


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

    columns, cells = _with_standard_errors([str(c) for c in table.columns], _formatted_cells(table))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in cells)
    title, _, note = header.partition("\n")
    paragraphs = "".join(_html_block(p.strip(), html.escape) for p in note.split("\n\n") if p.strip())
    style = ("body{font:14px sans-serif;max-width:none;margin:1em}p{max-width:70em}"
             "table{border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right;white-space:nowrap}th{background:#eee;position:sticky;top:0}"
             "td:first-child,th:first-child{text-align:left;position:sticky;left:0;background:#fff}"
             ".scroll{overflow:auto;max-height:90vh}code{background:#f4f4f4;padding:0 2px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title.lstrip('# '))}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title.lstrip('# '))}</h1>"
            f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            f"{paragraphs}</body></html>\n")


def _html_block(text: str, escape) -> str:
    """A Markdown block of the note as HTML: a bullet list ("- " lines) or a paragraph."""
    lines = text.splitlines()
    if all(line.startswith("- ") for line in lines):
        return "<ul>" + "".join(f"<li>{inline_code(escape(line[2:]))}</li>" for line in lines) + "</ul>"
    return f"<p>{inline_code(escape(text))}</p>"


def inline_code(escaped: str) -> str:
    """Markdown's `code` spans of an HTML-escaped paragraph as <code> (the note is Markdown)."""
    import re

    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def write_table(
    table: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike, header: str,
    tex_path: str | os.PathLike | None = None, html_path: str | os.PathLike | None = None,
    best: tuple[set, set] | None = None,
) -> None:
    """The same table as CSV (full precision), Markdown, and optionally LaTeX and HTML. With
    `best` (columns where lower, and where higher, is better) the Markdown is one table per
    sparsity with each column's best value in bold (`to_markdown_by_sparsity`)."""
    with atomic_file(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_file(md_path) as tmp:
        text = to_markdown(table, header) if best is None else to_markdown_by_sparsity(table, header, *best)
        Path(tmp).write_text(text)
    if tex_path:
        with atomic_file(tex_path) as tmp:
            Path(tmp).write_text(to_latex(table, header.partition("\n")[0].lstrip("# ")))
    if html_path:
        with atomic_file(html_path) as tmp:
            Path(tmp).write_text(to_html(table, header))

