"""Exceptions of the agent runtime (``myagent.agents``).

Hierarchy::

    AgentError                      base of every runtime error below
    ├── AgentLoadError              an agent file cannot be loaded (path, one-line reason)
    ├── AgentRunError               arun()/run() ended with an ERROR event (error_code)
    └── ToolDefinitionError         a tool or an agent's tool list is malformed
                                    (also a TypeError: raised at definition time)

Failures *inside* a turn (bad tool arguments, a tool raising, an LLM outage)
are not exceptions for the caller of ``astream``: they become events.
LLM providers have their own ``LLMError`` in ``myagent.agents.llm.base``.
"""

from __future__ import annotations

import os

__all__ = ["AgentError", "AgentLoadError", "AgentRunError", "ToolDefinitionError"]


class AgentError(Exception):
    """Base class of the agent runtime's exceptions."""


class AgentLoadError(AgentError):
    """An agent file cannot be loaded; ``reason`` is one line, no traceback."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot load agent file {self.path}: {reason}")


class AgentRunError(AgentError):
    """``Agent.arun``/``Agent.run`` ended with an error instead of an answer."""

    def __init__(self, message: str, error_code: str):
        self.error_code = error_code
        super().__init__(message)


class ToolDefinitionError(AgentError, TypeError):
    """A tool cannot be built from a function, or an agent's tools are invalid."""
