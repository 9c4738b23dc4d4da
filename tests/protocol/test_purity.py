"""myagent/protocol is pure: no I/O, process, thread or event-loop imports (a house rule)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import myagent.protocol

PACKAGE_DIR = Path(myagent.protocol.__file__).parent
MODULES = sorted(PACKAGE_DIR.glob("*.py"))

FORBIDDEN = {
    "asyncio", "socket", "os", "subprocess", "threading", "select", "selectors", "signal",
    "multiprocessing", "concurrent", "importlib", "ssl", "shutil", "pathlib", "uvloop", "websockets",
}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module name) of every absolute import; relative ones as '.'."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." if node.level else node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.append((node.lineno, "__import__"))
    return found


def test_the_package_has_modules():
    names = {path.stem for path in MODULES}
    assert {"events", "errors", "exceptions", "envelope", "wirejson", "schema", "framing"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_nothing_impure(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [(line, name) for line, name in imported_modules(tree) if name in FORBIDDEN or name == "__import__"]
    assert not bad, f"{path.name} imports forbidden modules: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_relative_imports_stay_inside_the_package(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1, f"{path.name}:{node.lineno} reaches outside myagent.protocol"


def test_the_checker_catches_violations():
    tree = ast.parse("import os.path\nfrom asyncio import sleep\nimport json\nfrom . import x\n__import__('socket')\n")
    names = {name for _, name in imported_modules(tree)}
    assert {"os", "asyncio", "json", ".", "__import__"} == names
