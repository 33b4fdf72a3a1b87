"""Code fingerprints: a stage's fingerprint follows the modules it imports, and only those."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from structprune.spec import codeversion
from structprune.spec.codeversion import module_closure, stage_code_version

PACKAGE = Path(codeversion.__file__).resolve().parents[1]


def write_package(root: Path) -> Path:
    (root / "stages").mkdir(parents=True)
    (root / "stages" / "common.py").write_text(
        "def helper():\n    from structprune.b import g\n\n"
        "def other():\n    from structprune.unused import y\n"
    )
    (root / "stages" / "alpha.py").write_text(
        "from structprune.stages.common import helper, other\n\n"
        "def arguments(parser):\n    from structprune.unused import y\n\n"
        "def run(args):\n    from structprune.a import f\n    helper()\n"
    )
    (root / "stages" / "beta.py").write_text("def run(args):\n    from structprune import c\n")
    (root / "a.py").write_text("from structprune.shared import x\n\ndef f():\n    return 1\n")
    (root / "b.py").write_text("def g():\n    return 2\n")
    (root / "c.py").write_text("from .shared import x\n")
    (root / "shared.py").write_text("x = 1\n")
    (root / "unused.py").write_text("y = 2\n")
    (root / "sub").mkdir()
    (root / "sub" / "__init__.py").write_text("from structprune.sub import leaf\n")
    (root / "sub" / "leaf.py").write_text("from .inner import z\n")
    (root / "sub" / "inner.py").write_text("z = 1\n")
    (root / "d.py").write_text("from structprune.sub import leaf\n")
    return root


def test_module_closure_follows_absolute_relative_and_nested_imports(tmp_path):
    root = write_package(tmp_path / "pkg")
    assert module_closure({"a"}, root) == ["a", "shared"]
    assert module_closure({"c"}, root) == ["c", "shared"]
    assert module_closure({"d"}, root) == ["d", "sub", "sub.inner", "sub.leaf"]  # subpackages too


def test_fingerprint_changes_with_used_modules_only(tmp_path):
    root = write_package(tmp_path / "pkg")
    alpha, beta = stage_code_version("alpha", root), stage_code_version("beta", root)
    (root / "unused.py").write_text("y = 3\n")
    assert (stage_code_version("alpha", root), stage_code_version("beta", root)) == (alpha, beta)
    (root / "stages" / "common.py").write_text(  # a shared helper alpha does not call
        "def helper():\n    from structprune.b import g\n\n"
        "def other():\n    from structprune.unused import y\n    return 1\n"
    )
    assert stage_code_version("alpha", root) == alpha
    (root / "b.py").write_text("def g():\n    return 3\n")  # reached through the shared helper
    assert stage_code_version("alpha", root) != alpha
    assert stage_code_version("beta", root) == beta
    (root / "shared.py").write_text("x = 2\n")  # reached by both
    assert stage_code_version("beta", root) != beta


def test_the_real_stages_have_fingerprints_that_track_their_modules(tmp_path):
    copy = tmp_path / "structprune"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = {c: stage_code_version(c, copy) for c in ("calibrate", "evaluate", "report", "model")}
    assert before == {c: stage_code_version(c) for c in before}  # the copy hashes like the package
    with open(copy / "calibration" / "statistics.py", "a") as f:
        f.write("\nCHANGED = True\n")
    after = {c: stage_code_version(c, copy) for c in before}
    assert after["calibrate"] != before["calibrate"]
    assert after["evaluate"] == before["evaluate"] and after["report"] == before["report"]
    with pytest.raises(ValueError, match="no stage command 'nope'"):
        stage_code_version("nope", copy)
