"""OpenAI chat-completions wire shapes for a scripted reply (pure, no I/O).

Used by :mod:`myagent.agents.llm.fake_server` to answer like the real API: a
``chat.completion`` object for plain requests, and for ``stream: true`` the
``chat.completion.chunk`` sequence OpenAI sends (role first, then content
deltas, then each tool call's id and name followed by its arguments in pieces,
then an empty delta carrying ``finish_reason``).
"""

from __future__ import annotations

from typing import Any, Iterator

from .base import LLMResponse
from .script import Reply, chunk_text

__all__ = ["completion_body", "stream_chunks", "error_body", "models_body"]

FAKE_MODEL = "fake-model"


def _envelope(kind: str, completion_id: str, model: str, created: int) -> dict[str, Any]:
    return {"id": completion_id, "object": kind, "created": created, "model": model}


def _tool_calls(response: LLMResponse) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in response.tool_calls
    ]


def completion_body(reply: Reply, *, completion_id: str, model: str, created: int) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` object for ``reply``."""
    response = reply.response
    message: dict[str, Any] = {"role": "assistant", "content": response.content or None}
    if response.tool_calls:
        message["tool_calls"] = _tool_calls(response)
    if response.reasoning is not None:
        message["reasoning_content"] = response.reasoning
    body = _envelope("chat.completion", completion_id, model, created)
    body["choices"] = [{"index": 0, "message": message, "finish_reason": response.finish_reason}]
    tokens = len(reply.deltas)
    body["usage"] = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
    return body


def stream_chunks(
    reply: Reply, *, completion_id: str, model: str, created: int, chunk_size: int
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects for ``reply``, in sending order.

    Tool-call arguments are split into ``chunk_size``-character pieces so
    clients must reassemble them, exactly as with the real API.
    """

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        body = _envelope("chat.completion.chunk", completion_id, model, created)
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        return body

    response = reply.response
    yield chunk({"role": "assistant", "content": ""})
    if response.reasoning:
        for piece in chunk_text(response.reasoning, chunk_size):
            yield chunk({"reasoning_content": piece})
    for text in reply.deltas:
        yield chunk({"content": text})
    for index, call in enumerate(response.tool_calls):
        function = {"name": call.name, "arguments": ""}
        yield chunk({"tool_calls": [{"index": index, "id": call.id, "type": "function", "function": function}]})
        for piece in chunk_text(call.arguments, chunk_size):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, response.finish_reason)


def error_body(message: str, kind: str = "server_error") -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def models_body() -> dict[str, Any]:
    """The ``GET /v1/models`` listing."""
    model = {"id": FAKE_MODEL, "object": "model", "created": 0, "owned_by": "myagent"}
    return {"object": "list", "data": [model]}
