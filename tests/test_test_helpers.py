"""The suite's own layout: test modules share code through helper modules (tiny_model, pipeline_copy, stage_harness,
...), never by importing another test module, which would run its module-level code and couple unrelated tests."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """The top-level names of every module `path` imports, lazy imports inside functions too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_of_the_suite_imports_a_test_module() -> None:
    test_modules = {path.stem for path in TESTS.glob("test_*.py")}
    found = {
        path.name: sorted(imported_modules(path) & test_modules)
        for path in sorted(TESTS.glob("*.py"))
        if imported_modules(path) & test_modules
    }
    assert found == {}, f"move what they share into a helper module under tests/: {found}"
