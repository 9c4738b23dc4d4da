"""Events streamed by ``Agent.astream`` and the confirmation request.

The kinds map one to one onto the wire events ``agent.<kind>``. A completed
``astream`` call yields exactly one terminal event (FINAL_ANSWER or ERROR);
a cancelled one yields none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ERROR",
    "EVENT_KINDS",
    "FINAL_ANSWER",
    "PARTIAL_ANSWER",
    "TERMINAL_KINDS",
    "THINKING",
    "TOOL_CALL",
    "TOOL_RESULT",
    "USER_CONFIRM",
    "AgentEvent",
    "ConfirmRequest",
]

THINKING = "thinking"
TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"
PARTIAL_ANSWER = "partial_answer"
FINAL_ANSWER = "final_answer"
ERROR = "error"
USER_CONFIRM = "user_confirm"

EVENT_KINDS = frozenset(
    {THINKING, TOOL_CALL, TOOL_RESULT, PARTIAL_ANSWER, FINAL_ANSWER, ERROR, USER_CONFIRM}
)
TERMINAL_KINDS = frozenset({FINAL_ANSWER, ERROR})


@dataclass(slots=True)
class AgentEvent:
    """One step of the agent's work.

    ``step_id`` correlates a TOOL_CALL with its USER_CONFIRM and TOOL_RESULT
    (it is the model's tool call id); ``metadata`` is machine-readable detail.
    """

    kind: str
    content: str
    step_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (the metadata is copied one level deep)."""
        return {
            "kind": self.kind,
            "content": self.content,
            "step_id": self.step_id,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True, slots=True)
class ConfirmRequest:
    """What ``astream``'s ``confirm`` callback is asked to approve."""

    step_id: str
    tool_name: str
    tool_args: dict[str, Any]
    tool_description: str
