"""myagent: agent runtime and the `myagent-ws` WebSocket server.

The public API is imported lazily (PEP 562), so that ``import myagent.protocol``
or starting the front process does not pull in the agent runtime and the LLM
SDKs; ``from myagent import create_react_agent`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "myagent.agents.agent",
    "create_react_agent": "myagent.agents.agent",
    "create_toolcall_agent": "myagent.agents.agent",
    "AgentEvent": "myagent.agents.events",
    "BaseTool": "myagent.agents.tools",
    "ToolResult": "myagent.agents.tools",
    "tool": "myagent.agents.tools",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from myagent.agents.agent import Agent, create_react_agent, create_toolcall_agent
    from myagent.agents.events import AgentEvent
    from myagent.agents.tools import BaseTool, ToolResult, tool


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'myagent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
