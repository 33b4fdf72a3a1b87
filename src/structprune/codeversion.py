"""A fingerprint of the code a pipeline stage runs, for Snakemake's params trigger.

Snakemake's `code` trigger sees only a rule's shell line, so an edit to the
library function a stage calls would be silently ignored. Each rule therefore
carries ``code=stage_code_version(command)`` in its params: a hash of the
source of the CLI function ``cmd_<command>``, the CLI helpers it calls, and
every ``structprune`` module reachable from their imports. Editing a module a
stage uses changes that stage's fingerprint and reruns its jobs (and, through
their outputs, everything downstream); an edit elsewhere (another stage's
module, a docstring in the README) does not.

Pure standard library, no torch: the Snakefile imports this at parse time.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "structprune"
SOURCE = Path(__file__).resolve().parent


def _imported_modules(tree: ast.AST, source: Path) -> set[str]:
    """Names of the structprune modules a syntax tree imports (anywhere, also inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level == 0 and node.module == PACKAGE:
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module.startswith(PACKAGE + "."):
                found.add(node.module.split(".")[1])
            elif node.level == 1:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith(PACKAGE + "."))
    return {name for name in found if (source / f"{name}.py").is_file()}


def module_closure(roots: set[str], source: Path = SOURCE) -> list[str]:
    """Every module reachable from `roots` through structprune imports, sorted."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imported_modules(ast.parse((source / f"{name}.py").read_text()), source) - seen)
    return sorted(seen)


def _cli_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def stage_code_version(command: str, source: Path = SOURCE) -> str:
    """12 hex digits that change when the code behind ``python -m structprune <command>`` does."""
    cli_text = (source / "cli.py").read_text()
    functions = _cli_functions(ast.parse(cli_text))
    entry = "cmd_" + command.replace("-", "_")
    if entry not in functions:
        raise ValueError(f"structprune has no stage command {command!r} (no {entry} in cli.py)")
    used, todo = set(), [entry]
    while todo:  # the command and the module-level CLI helpers it calls, transitively
        name = todo.pop()
        used.add(name)
        calls = {n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)}
        todo.extend(c for c in calls & functions.keys() if c not in used)
    digest = hashlib.sha256()
    for name in sorted(used):
        digest.update(ast.get_source_segment(cli_text, functions[name]).encode())
    roots = set().union(*(_imported_modules(functions[name], source) for name in used))
    for module in module_closure(roots, source):
        digest.update(module.encode() + b"\0" + (source / f"{module}.py").read_bytes())
    return digest.hexdigest()[:12]
