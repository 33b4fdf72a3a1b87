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


def _formatted_cells(table: pd.DataFrame) -> list[list[str]]:
    """Cell texts as in the Markdown table: parameter counts in millions, floats to 2 places."""
    formatted = table.copy()
    for column in formatted.columns:
        if column in ("Params", "Block params"):
            formatted[column] = formatted[column].map(lambda n: f"{n / 1e6:.2f}M")
        elif formatted[column].dtype.kind == "f":
            formatted[column] = formatted[column].map(lambda x: "" if pd.isna(x) else f"{x:.2f}")
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

