"""A fingerprint of the code a pipeline stage runs, for Snakemake's params trigger.

Snakemake's `code` trigger sees only a rule's shell line, so an edit to the
library function a stage calls would be silently ignored. Each rule therefore
carries ``code=stage_code_version(command)`` in its params: a hash of the
source of the stage's ``run`` (in ``stages/<command>.py``), the functions of
that module and of ``stages/common.py`` it calls, and every ``structprune``
module reachable from their imports. Editing a module a stage uses changes
that stage's fingerprint and reruns its jobs (and, through their outputs,
everything downstream); an edit elsewhere (another stage's module, a shared
helper it does not call, a docstring in the README) does not.

Pure standard library, no torch: the Snakefile imports this at parse time.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "structprune"
SOURCE = Path(__file__).resolve().parents[1]


def module_file(name: str, source: Path = SOURCE) -> Path | None:
    """The file of a dotted module name inside the package ("scores.flap"), or None."""
    path = source.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imported_modules(tree: ast.AST, source: Path, package: str = "") -> set[str]:
    """Dotted names (relative to the package) of the structprune modules a syntax tree imports,
    anywhere, also inside functions; `from structprune.pruning.scores import flap` names both the
    package `scores` and its module `scores.flap`. Relative imports resolve against
    `package`, the dotted subpackage of the importing module ("" at the top)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE:
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(PACKAGE + "."):
                rest = node.module[len(PACKAGE) + 1:]
                found.add(rest)
                found.update(f"{rest}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            base = ".".join(filter(None, [package, node.module]))
            if node.module:
                found.add(base)
            found.update(".".join(filter(None, [base, alias.name])) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name[len(PACKAGE) + 1:] for a in node.names if a.name.startswith(PACKAGE + "."))
    return {name for name in found if module_file(name, source) is not None}


def module_closure(roots: set[str], source: Path = SOURCE) -> list[str]:
    """Every module reachable from `roots` through structprune imports, sorted."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, source)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(_imported_modules(ast.parse(path.read_text()), source, package) - seen)
    return sorted(seen)


def _top_level(path: Path) -> tuple[str, dict[str, ast.FunctionDef], dict[str, str]]:
    """A module's text, its functions, and {name: dotted module} of what it imports by name
    from structprune at the top (`from structprune.stages.common import load_model`)."""
    text = path.read_text()
    tree = ast.parse(text)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    imported = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE + "."):
            for alias in node.names:
                imported[alias.asname or alias.name] = node.module[len(PACKAGE) + 1:]
    return text, functions, imported


SHARED = "stages.common"  # hashed function by function, like the stage's own module


def stage_code_version(command: str, source: Path = SOURCE) -> str:
    """12 hex digits that change when the code behind ``python -m structprune <command>`` does."""
    module = "stages." + command.replace("-", "_")
    path = module_file(module, source)
    if path is None:
        raise ValueError(f"structprune has no stage command {command!r} (no {module.replace('.', '/')}.py)")
    text, functions, imported = _top_level(path)
    shared_text, shared_functions, _ = _top_level(module_file(SHARED, source))
    where = {name: (text, node) for name, node in functions.items()}
    for name, node in shared_functions.items():
        if imported.get(name) == SHARED:
            where.setdefault(name, (shared_text, node))
    if "run" not in functions:
        raise ValueError(f"{path} has no run(args)")
    used, todo = set(), ["run"]
    while todo:  # the stage's run and the module-level helpers it calls, transitively
        name = todo.pop()
        used.add(name)
        calls = {n.id for n in ast.walk(where[name][1]) if isinstance(n, ast.Name)}
        todo.extend(c for c in calls & where.keys() if c not in used)
    digest = hashlib.sha256()
    roots: set[str] = set()
    for name in sorted(used):
        owner_text, node = where[name]
        digest.update(ast.get_source_segment(owner_text, node).encode())
        roots |= _imported_modules(node, source)
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        roots |= {imported[n] for n in names if n in imported and imported[n] != SHARED}
    for module_name in module_closure(roots, source):
        digest.update(module_name.encode() + b"\0" + module_file(module_name, source).read_bytes())
    return digest.hexdigest()[:12]
