"""The options each registered score accepts, read from the source without importing torch.

The workflow's config validation (workflow/rules/common.smk) uses this to reject an unknown
score option (`options: {sed: 0}`) before any job starts, instead of a TypeError inside a job.
A score family registers itself with ``@register("name", ...)`` on a ``make_*(options...)``
function; its keyword parameters are the options. tests/test_engine.py checks this reading
against the imported registry.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

SCORES = Path(__file__).resolve().parents[1] / "pruning" / "scores"


def score_options(scores_dir: Path = SCORES) -> dict[str, list[str]]:
    """{score name: its option names} for every ``@register``-ed maker under `scores_dir`."""
    return {score: list(specs) for score, specs in score_option_specs(scores_dir).items()}


def _module_tuples(tree: ast.Module) -> dict[str, tuple]:
    """Module-level `NAME = ("a", "b", ...)` constants."""
    found = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.value.elts)):
            found[node.targets[0].id] = tuple(e.value for e in node.value.elts)
    return found


def _choices(function: ast.FunctionDef, tuples: dict[str, tuple]) -> dict[str, tuple]:
    """{parameter: allowed values} from the maker's own `if param not in CHOICES: raise` checks."""
    found = {}
    for node in ast.walk(function):
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and len(node.ops) == 1
                and isinstance(node.ops[0], ast.NotIn)):
            target = node.comparators[0]
            if isinstance(target, ast.Name) and target.id in tuples:
                found[node.left.id] = tuples[target.id]
            elif isinstance(target, ast.Tuple) and all(isinstance(e, ast.Constant) for e in target.elts):
                found[node.left.id] = tuple(e.value for e in target.elts)
    return found


def score_option_specs(scores_dir: Path = SCORES) -> dict[str, dict[str, dict]]:
    """{score: {option: {"types": annotation names (or None), "choices": allowed values (or None)}}},
    read from each maker's signature and its own `not in` checks, so the config is held to
    exactly what the maker would accept."""
    found: dict[str, dict[str, dict]] = {}
    for path in sorted(scores_dir.glob("*.py")):
        tree = ast.parse(path.read_text())
        tuples = _module_tuples(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "register"
                        and decorator.args and isinstance(decorator.args[0], ast.Constant)):
                    choices = _choices(node, tuples)
                    params = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                    found[decorator.args[0].value] = {
                        a.arg: {"types": tuple(t.strip() for t in ast.unparse(a.annotation).split("|")) if a.annotation else None,
                                "choices": choices.get(a.arg)}
                        for a in params
                    }
    return found


TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "None": lambda v: v is None,
}


def option_value_problem(spec: dict, value) -> str | None:
    """Why `value` does not fit an option's spec (from `score_option_specs`), or None."""
    types = spec["types"]
    if types and all(t in TYPE_CHECKS for t in types) and not any(TYPE_CHECKS[t](value) for t in types):
        return f"{value!r} is not of type {' or '.join(types)}"
    if spec["choices"] is not None and value not in spec["choices"] and not (value is None and "None" in (types or ())):
        return f"{value!r} is not one of {list(spec['choices'])}"
    return None
