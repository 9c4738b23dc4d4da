"""The environment variables an agent file declares, read without running the file.

An agent file names what its tools need, ``create_react_agent(..., env=["SERPER_API_KEY"])``
or, for ``create_agent()`` factories and agents built elsewhere, a module-level
``ENV = ["SERPER_API_KEY"]``. The server passes exactly those names (plus its allow
list) to the zygote and the sandboxes.

Why a static read: the front process never runs agent code (nor imports the runtime),
and the zygote must be *started* with the values, so that module-level code of the
file already sees them. So the front reads the declaration from the file's syntax
tree; the names must be written out as strings (or a module-level name bound to such
a list). The zygote reports what the loaded agent declares at run time, and the front
refuses a name it could not read here (:func:`unreadable`), rather than silently
withholding it.

Pure: ``ast`` and a file read; imported by the front, the runtime and ``check``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["MODULE_NAME", "DeclarationError", "check_names", "read_declared", "report", "unreadable"]

MODULE_NAME = "ENV"  # the module-level declaration
FACTORIES = frozenset({"create_react_agent", "create_toolcall_agent", "Agent"})  # calls whose env= is read
SERVER_OWN = "MYAGENT_WS_"  # the server's settings and secrets: never declarable
MAX_NAMES = 64
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


class DeclarationError(ValueError):
    """A declaration that is not a list of valid variable names."""


def check_names(names: Any, what: str = "env") -> tuple[str, ...]:
    """``names`` as a tuple without duplicates; ValueError (DeclarationError) for anything but a
    list of variable names, or a name of the server's own (``MYAGENT_WS_*``)."""
    if names is None:
        return ()
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple, set, frozenset)):
        raise DeclarationError(f"{what} must be a list of environment variable names, e.g. "
                               f'{what}=["SERPER_API_KEY"], not {type(names).__name__}')
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise DeclarationError(f"{what}: {name!r} is not an environment variable name")
        if name.startswith(SERVER_OWN):
            raise DeclarationError(f"{what}: {name} is one of the server's own settings ({SERVER_OWN}*), "
                                   "never passed to agent code")
        if name not in out:
            out.append(name)
    if len(out) > MAX_NAMES:
        raise DeclarationError(f"{what}: {len(out)} names, at most {MAX_NAMES}")
    return tuple(out)


def read_declared(path: str | Path) -> tuple[str, ...]:
    """Every name declared in the file: ``env=`` of each agent factory call and ``ENV``, in order.

    A file that cannot be read or parsed declares nothing here: loading it reports the
    error. Raises DeclarationError (with the line) for a declaration not written out.
    """
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return ()
    assigned = _module_assignments(tree)
    found: list[str] = []
    if MODULE_NAME in assigned:
        found += _literal(assigned[MODULE_NAME], assigned, MODULE_NAME)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called_name(node.func) in FACTORIES:
            for keyword in node.keywords:
                if keyword.arg == "env":
                    found += _literal(keyword.value, assigned, "env")
    return check_names(found)


def unreadable(runtime: Iterable[str], declared: Iterable[str]) -> str | None:
    """The error when the loaded agent declares names the static read did not find, else None."""
    hidden = [name for name in runtime if name not in set(declared)]
    if not hidden:
        return None
    listed = ", ".join(f'"{name}"' for name in hidden)
    return (f"declares {', '.join(hidden)} in code the server does not run before starting the sandboxes "
            f"(a computed list, or another module): write the names out in the agent file, "
            f"env=[{listed}] or {MODULE_NAME} = [{listed}]")


def report(declared: Iterable[str], source: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(one line per declared name saying whether ``source`` sets it, never its value; the missing names)."""
    lines, missing = [], []
    for name in declared:
        if source.get(name):
            lines.append(f"{name}: set")
        else:
            lines.append(f"{name}: {'empty' if name in source else 'missing'}")
            missing.append(name)
    return lines, missing


def _module_assignments(tree: ast.Module) -> dict[str, ast.expr]:
    """Top-level ``NAME = value`` (the last one wins, as when the module runs)."""
    out: dict[str, ast.expr] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            out[stmt.target.id] = stmt.value
    return out


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _literal(node: ast.expr, assigned: dict[str, ast.expr], what: str, depth: int = 0) -> list[str]:
    """The names a declaration lists: a list/tuple/set of strings, None, or a module-level name bound to one."""
    if isinstance(node, ast.Constant) and node.value is None:
        return []
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return [e.value for e in node.elts]  # type: ignore[attr-defined]
    if isinstance(node, ast.Name) and node.id in assigned and depth < 3:
        return _literal(assigned[node.id], assigned, what, depth + 1)
    raise DeclarationError(f"line {node.lineno}: {what} must list the variable names as strings, e.g. "
                           f'{what}{" = " if what == MODULE_NAME else "="}["SERPER_API_KEY"] (the server reads '
                           "it without running the file)")
