"""Load an agent file: ``load_agent_file(path) -> AgentFactory``.

An agent file is a Python file defining ``create_agent()`` (called once per
new agent; it wins when both exist) or a module-level ``agent`` (cloned per
new agent). The environment it needs is the agent's ``env=`` plus a
module-level ``ENV`` list (see :mod:`myagent.declared_env`). Every failure
raises :class:`AgentLoadError` with a one-line reason (no traceback), so the
server can refuse to start with a clear message.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from ..declared_env import MODULE_NAME, DeclarationError, check_names
from .exceptions import AgentLoadError

__all__ = ["AgentFactory", "is_agent", "load_agent_file"]

_counter = itertools.count(1)
_MAX_REASON = 300


def is_agent(obj: Any) -> bool:
    """Duck-typed check: an agent has callable ``astream`` and ``clone``."""
    return callable(getattr(obj, "astream", None)) and callable(getattr(obj, "clone", None))


class AgentFactory:
    """Makes fresh agents from a loaded agent file.

    ``name``, ``tools`` and ``description`` come from a prototype agent (the
    module's ``agent``, or the first ``create_agent()`` result).
    """

    def __init__(self, path: str, module: ModuleType, prototype: Any, make: Callable[[], Any]):
        self.path = path
        self.module = module
        self._prototype = prototype
        self._make = make
        self.env = _declared_env(module, prototype, path)

    @property
    def name(self) -> str:
        return str(getattr(self._prototype, "name", None) or Path(self.path).stem)

    @property
    def tools(self) -> list[Any]:
        return list(getattr(self._prototype, "tools", None) or [])

    @property
    def description(self) -> str:
        return str(getattr(self._prototype, "description", None) or "")

    def new(self) -> Any:
        """A fresh agent with an empty history (``create_agent()`` or ``agent.clone()``)."""
        agent = self._make()
        if not is_agent(agent):
            raise AgentLoadError(self.path, f"the agent factory returned {_kind(agent)}, not an agent")
        return agent

    def describe(self) -> dict[str, Any]:
        """Name, description and tools (with their JSON Schemas), for clients and ``status``."""
        return {
            "name": self.name,
            "description": self.description,
            "tools": [
                {
                    "name": getattr(t, "name", ""),
                    "description": getattr(t, "description", ""),
                    "parameters": getattr(t, "parameters", {}),
                    "requires_confirmation": bool(getattr(t, "requires_confirmation", False)),
                }
                for t in self.tools
            ],
        }

    def __repr__(self) -> str:
        return f"<AgentFactory {self.name!r} from {self.path}>"


def load_agent_file(path: str | os.PathLike[str]) -> AgentFactory:
    """Import ``path`` under a unique module name and find its agent.

    The file's directory is put first on ``sys.path`` so that it can import
    its sibling modules. Raises AgentLoadError for a missing file, a non-.py
    path, a syntax error, an import failure, or a missing or invalid agent.
    """
    file = Path(path).expanduser()
    shown = os.fspath(path)
    if not file.exists():
        raise AgentLoadError(shown, "file not found")
    if file.is_dir():
        raise AgentLoadError(shown, "is a directory, not a .py file")
    if file.suffix != ".py":
        raise AgentLoadError(shown, "not a Python file (expected a .py file)")
    file = file.resolve()
    try:
        source = file.read_bytes()
    except OSError as exc:
        raise AgentLoadError(shown, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        compile(source, os.fspath(file), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise AgentLoadError(shown, f"syntax error at line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. null bytes in the source
        raise AgentLoadError(shown, f"invalid source: {_one_line(exc)}") from None
    module = _import(file, shown)
    return _factory(module, shown)


def _import(file: Path, shown: str) -> ModuleType:
    stem = re.sub(r"\W", "_", file.stem)
    module_name = f"_myagent_agent_{stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise AgentLoadError(shown, "cannot create an import spec for the file")
    folder = os.fspath(file.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise AgentLoadError(shown, f"import failed: {type(exc).__name__}: {_one_line(exc)}") from None
    return module


def _factory(module: ModuleType, shown: str) -> AgentFactory:
    create = getattr(module, "create_agent", None)
    if create is not None:
        if not callable(create):
            raise AgentLoadError(shown, f"create_agent is {_kind(create)}, not a function")
        try:
            prototype = create()
        except Exception as exc:
            raise AgentLoadError(
                shown, f"create_agent() failed: {type(exc).__name__}: {_one_line(exc)}"
            ) from None
        if not is_agent(prototype):
            raise AgentLoadError(shown, f"create_agent() returned {_kind(prototype)}, not an agent")
        return AgentFactory(shown, module, prototype, create)
    if not hasattr(module, "agent"):
        raise AgentLoadError(
            shown, "defines neither `agent` nor `create_agent()`; add `agent = create_react_agent(...)`"
        )
    agent = module.agent
    if not is_agent(agent):
        raise AgentLoadError(
            shown, f"`agent` is {_kind(agent)}, not an agent (expected `agent = create_react_agent(...)`)"
        )
    return AgentFactory(shown, module, agent, agent.clone)


def _declared_env(module: ModuleType, prototype: Any, shown: str) -> tuple[str, ...]:
    """The environment variable names the file declares: module-level ``ENV``, then the agent's ``env=``
    (of our Agent only: a duck-typed agent's ``env`` attribute may mean anything)."""
    from .agent import Agent

    try:
        names = check_names(getattr(module, MODULE_NAME, None), MODULE_NAME)
        return check_names([*names, *(prototype.env if isinstance(prototype, Agent) else ())])
    except DeclarationError as exc:
        raise AgentLoadError(shown, str(exc)) from None


def _kind(obj: Any) -> str:
    return "None" if obj is None else f"a {type(obj).__name__}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
