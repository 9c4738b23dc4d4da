"""The one translator from agent events to protocol events.

The agent runtime speaks in :class:`~myagent.agents.events.AgentEvent` kinds;
clients speak the protocol (``agent.*`` events with an envelope). Everything a
sandbox says about a turn goes through here, so the front process only checks
and relays: each event leaves as its protocol name plus the agent-side half of
the envelope (:func:`myagent.protocol.envelope.event_body`), with ``turn_id``
in its metadata and long tool results truncated. The front uses the same
:meth:`Translator.interrupted` when it ends a turn itself (a sandbox died, the
session was closed), so an interruption reads the same whoever reports it.
"""

from __future__ import annotations

from typing import Any

from myagent.protocol import events as ev
from myagent.protocol.envelope import event_body
from myagent.protocol.errors import ErrorCode, error_metadata

AGENT_KINDS = {
    "thinking": ev.AGENT_THINKING,
    "tool_call": ev.AGENT_TOOL_CALL,
    "tool_result": ev.AGENT_TOOL_RESULT,
    "partial_answer": ev.AGENT_PARTIAL_ANSWER,
    "final_answer": ev.AGENT_FINAL_ANSWER,
    "error": ev.AGENT_ERROR,
    "user_confirm": ev.AGENT_USER_CONFIRM,
}

INTERRUPTED_TEXT = {
    ErrorCode.CANCELLED: "The turn was cancelled.",
    ErrorCode.TURN_TIMEOUT: "The turn took longer than the server's turn timeout.",
    ErrorCode.SHUTTING_DOWN: "The server is shutting down.",
    ErrorCode.SESSION_CLOSED: "The session was closed.",
}


class Translator:
    """Agent events of one sandbox as (protocol event name, body bytes)."""

    def __init__(self, max_tool_result_chars: int = 0) -> None:
        self.max_tool_result_chars = max_tool_result_chars

    def agent_event(self, event: Any, turn_id: str) -> tuple[str, bytes]:
        name = AGENT_KINDS.get(event.kind)
        if name is None:  # a runtime bug, reported as one rather than relayed
            return self.failed(turn_id, ErrorCode.INTERNAL_ERROR, f"Unknown agent event kind {event.kind!r}.")
        meta = dict(event.metadata) if event.metadata else {}
        content = event.content
        limit = self.max_tool_result_chars
        if name == ev.AGENT_TOOL_RESULT and limit and isinstance(content, str) and len(content) > limit:
            content = f"{content[:limit]}…[truncated {len(content) - limit} chars]"
            meta["truncated"] = True
        if name == ev.AGENT_ERROR:
            code = _code(meta.get("error_code", ErrorCode.INTERNAL_ERROR))
            meta = {**error_metadata(code), **meta, "error_code": code.value}
        meta["turn_id"] = turn_id
        return name, event_body(content, meta, event.step_id)

    def interrupted(self, turn_id: str, code: ErrorCode | str, *, text: str | None = None,
                    usage: dict | None = None, **extra: Any) -> tuple[str, bytes]:
        """``usage``: the turn's (myagent.protocol.usage); None says it is unknown."""
        code = _code(code)
        text = text or INTERRUPTED_TEXT.get(code, f"The turn was interrupted ({code.value}).")
        return ev.AGENT_INTERRUPTED, event_body(text, {"reason": code.value, **error_metadata(code), **extra,
                                                       "usage": usage, "turn_id": turn_id})

    def failed(self, turn_id: str, code: ErrorCode | str, text: str, *, usage: dict | None = None,
               **extra: Any) -> tuple[str, bytes]:
        return ev.AGENT_ERROR, event_body(text, {**error_metadata(_code(code)), **extra, "usage": usage,
                                                 "turn_id": turn_id})


def _code(value: ErrorCode | str) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL_ERROR
