"""The options each registered score accepts, read from the source without importing torch.

The workflow's config validation (workflow/rules/common.smk) uses this to reject an unknown
score option (`options: {sed: 0}`) before any job starts, instead of a TypeError inside a job.
A score family registers itself with ``@register("name", ...)`` on a ``make_*(options...)``
function; its keyword parameters are the options. tests/test_engine.py checks this reading
against the imported registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

SCORES = Path(__file__).resolve().parent / "scores"


def score_options(scores_dir: Path = SCORES) -> dict[str, list[str]]:
    """{score name: its option names} for every ``@register``-ed maker under `scores_dir`."""
    found: dict[str, list[str]] = {}
    for path in sorted(scores_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "register"
                        and decorator.args and isinstance(decorator.args[0], ast.Constant)):
                    args = node.args
                    found[decorator.args[0].value] = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return found
