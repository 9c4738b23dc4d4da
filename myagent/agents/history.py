"""Conversation history checks and repair (pure: no I/O, no asyncio).

A history is a list of OpenAI chat messages with roles ``user``, ``assistant``
and ``tool``; the system prompt is never part of it (the agent adds it for
each model call). OpenAI-compatible APIs reject a history in which an
assistant tool call has no ``tool`` answer, which is exactly what a cancelled
turn or a crashed sandbox leaves behind; :func:`repair_history` fixes that.

:class:`History` holds an agent's conversation twice: as dicts (what providers
and the agent read) and as JSON encoded once per message (what a request body
is joined from), so a long conversation is never re-serialised per request.
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson

__all__ = [
    "History",
    "compact_json",
    "INTERRUPTED_TOOL_CONTENT",
    "interrupted_tool_message",
    "repair_history",
    "validate_history",
]

INTERRUPTED_TOOL_CONTENT = "Error: interrupted before the tool finished"


class History:
    """A conversation as messages and as their JSON encodings, kept aligned.

    Only :meth:`append` adds to it; anything else (load, trim) builds a new one. The
    dicts are the agent's own: hand out copies (:meth:`copy_of`), never the dicts.
    """

    __slots__ = ("messages", "encoded")

    def __init__(self, messages: Iterable[dict[str, Any]] = ()) -> None:
        self.messages: list[dict[str, Any]] = []
        self.encoded: list[bytes] = []
        for message in messages:
            self.append(message)

    def append(self, message: dict[str, Any]) -> bytes:
        """Add ``message`` (the history keeps this dict); return its JSON."""
        try:
            data = compact_json(message)
        except TypeError:  # orjson refuses lone surrogates, e.g. from a tool's undecodable output
            message = _scrub(message)
            data = compact_json(message)
        self.messages.append(message)
        self.encoded.append(data)
        return data

    @staticmethod
    def copy_of(data: bytes) -> dict[str, Any]:
        """A fresh deep copy of an encoded message (faster than copy.deepcopy)."""
        return orjson.loads(data)

    def __len__(self) -> int:
        return len(self.messages)


def compact_json(value: Any) -> bytes:
    """``orjson.dumps(value)`` in a bytes object of its own size.

    orjson returns its output in a 4 KiB buffer however short the JSON (3.x; measured: a
    60-byte message held 4 KiB of RSS while alive). Fine for a frame sent at once, not for
    something kept: a history of 400 short messages held 1.6 MB. The copy costs ~0.1 µs.
    """
    return bytes(memoryview(orjson.dumps(value)))


def _scrub(value: Any) -> Any:
    """``value`` with every string made valid UTF-8 (a lone surrogate becomes '?')."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


class _Invalid(Exception):
    """One entry (or one tool call of an entry) is malformed."""


def interrupted_tool_message(tool_call_id: str) -> dict[str, Any]:
    """The synthetic answer to a tool call that never finished."""
    return {"role": "tool", "tool_call_id": tool_call_id, "content": INTERRUPTED_TOOL_CONTENT}


def repair_history(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """A normalized copy of ``messages`` that an OpenAI-compatible API accepts.

    Malformed entries, system messages and tool results that answer no pending
    call are dropped; malformed tool calls are dropped from their message; an
    assistant tool call without an answer gets a synthetic tool message right
    after that assistant's other tool results. The input is not modified.
    """
    return _walk(messages, strict=False)


def validate_history(messages: Any) -> None:
    """Raise ValueError naming the first entry :func:`repair_history` would drop.

    Unanswered tool calls are accepted: they are what an interrupted turn
    legitimately leaves, and ``repair_history`` answers them.
    """
    if not isinstance(messages, (list, tuple)):
        raise ValueError(f"history must be a list of messages, not {type(messages).__name__}")
    _walk(messages, strict=True)


def _walk(messages: Iterable[Any], *, strict: bool) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, Iterable):
        return []
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # unanswered call ids of the last assistant message, in order
    for index, raw in enumerate(messages):
        try:
            message = _normalize(raw, strict)
            if message["role"] == "tool" and message["tool_call_id"] not in pending:
                raise _Invalid(
                    f"tool result for {message['tool_call_id']!r} answers no pending tool call "
                    "of the preceding assistant message"
                )
        except _Invalid as exc:
            if strict:
                raise ValueError(f"history[{index}]: {exc}") from None
            continue
        if message["role"] == "tool":
            pending.remove(message["tool_call_id"])
            out.append(message)
            continue
        out.extend(interrupted_tool_message(call_id) for call_id in pending)
        out.append(message)
        pending = [call["id"] for call in message.get("tool_calls", ())]
    out.extend(interrupted_tool_message(call_id) for call_id in pending)
    return out


def _normalize(raw: Any, strict: bool) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Invalid(f"a message must be an object, not {type(raw).__name__}")
    role = raw.get("role")
    if role == "system":
        raise _Invalid("system messages are not part of the history (the agent adds its system prompt)")
    if role == "user":
        return _user(raw)
    if role == "assistant":
        return _assistant(raw, strict)
    if role == "tool":
        return _tool(raw)
    raise _Invalid(f"unknown role {role!r} (expected 'user', 'assistant' or 'tool')")


def _user(raw: dict[str, Any]) -> dict[str, Any]:
    content = raw.get("content")
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        content = [dict(part) for part in content]
    elif not isinstance(content, str):
        raise _Invalid("user content must be a string or a list of content parts")
    message: dict[str, Any] = {"role": "user", "content": content}
    if isinstance(raw.get("name"), str):
        message["name"] = raw["name"]
    return message


def _assistant(raw: dict[str, Any], strict: bool) -> dict[str, Any]:
    content = raw.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise _Invalid("assistant content must be a string or null")
    message: dict[str, Any] = {"role": "assistant", "content": content}
    calls = raw.get("tool_calls")
    if calls is None:
        return message
    if not isinstance(calls, list):
        raise _Invalid("assistant tool_calls must be a list")
    clean: list[dict[str, Any]] = []
    for position, call in enumerate(calls):
        try:
            normalized = _tool_call(call)
            if any(c["id"] == normalized["id"] for c in clean):
                raise _Invalid(f"duplicate tool call id {normalized['id']!r}")
        except _Invalid as exc:
            if strict:
                raise _Invalid(f"tool_calls[{position}]: {exc}") from None
            continue
        clean.append(normalized)
    if clean:
        message["tool_calls"] = clean
    return message


def _tool_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise _Invalid("a tool call must be an object")
    call_id = call.get("id")
    function = call.get("function")
    if not isinstance(call_id, str) or not call_id:
        raise _Invalid("a tool call needs a non-empty string id")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise _Invalid("a tool call needs function.name")
    arguments = function.get("arguments", "")
    if isinstance(arguments, dict):
        arguments = orjson.dumps(arguments).decode()
    if not isinstance(arguments, str):
        raise _Invalid("tool call arguments must be a JSON string")
    return {"id": call_id, "type": "function", "function": {"name": function["name"], "arguments": arguments}}


def _tool(raw: dict[str, Any]) -> dict[str, Any]:
    call_id = raw.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _Invalid("a tool message needs a non-empty string tool_call_id")
    if not isinstance(raw.get("content"), str):
        raise _Invalid("tool message content must be a string")
    return {"role": "tool", "tool_call_id": call_id, "content": raw["content"]}
