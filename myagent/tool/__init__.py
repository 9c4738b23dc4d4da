"""Tools for agent files; see :mod:`myagent.tool.base_tool`.

``myagent.tool`` is both this package and, in ``myagent/__init__``, the
``@tool`` decorator. Once this package is imported, Python binds the name
``tool`` on ``myagent`` to the package, so ``from myagent import tool`` would
return a module after ``import myagent.tool.base_tool``. To make both import
orders work, the package module is callable and behaves as the decorator.
"""

import sys
import types
from typing import Any

from myagent.tool.base_tool import BaseTool, FunctionTool, ToolResult, tool

__all__ = ["BaseTool", "FunctionTool", "ToolResult", "tool"]


class _DecoratorModule(types.ModuleType):
    """A module that, when called, is :func:`myagent.agents.tools.tool`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return tool(*args, **kwargs)


sys.modules[__name__].__class__ = _DecoratorModule
