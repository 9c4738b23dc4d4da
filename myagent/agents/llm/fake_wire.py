"""OpenAI chat-completions wire shapes for a scripted reply (pure, no I/O).

Used by :mod:`myagent.agents.llm.fake_server` to answer like the real API: a
``chat.completion`` object for plain requests, and for ``stream: true`` the
``chat.completion.chunk`` sequence OpenAI sends (role first, then content
deltas, then each tool call's id and name followed by its arguments in pieces,
then an empty delta carrying ``finish_reason``, then, when the request asked for it with
``stream_options.include_usage``, a chunk with no choices carrying ``usage``).

Token counts are a deterministic stand-in for a tokenizer (about four characters a token,
as OpenAI's rule of thumb): realistic sizes that tests can compute and compare.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Sequence

from .base import LLMResponse
from .script import Reply, chunk_text

__all__ = ["completion_body", "stream_chunks", "error_body", "models_body", "usage_body"]

FAKE_MODEL = "fake-model"


def _envelope(kind: str, completion_id: str, model: str, created: int) -> dict[str, Any]:
    return {"id": completion_id, "object": kind, "created": created, "model": model}


def _tool_calls(response: LLMResponse) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in response.tool_calls
    ]


def completion_body(reply: Reply, *, completion_id: str, model: str, created: int,
                    usage: dict[str, int] | None = None) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` object for ``reply`` (with ``usage`` unless None)."""
    response = reply.response
    message: dict[str, Any] = {"role": "assistant", "content": response.content or None}
    if response.tool_calls:
        message["tool_calls"] = _tool_calls(response)
    if response.reasoning is not None:
        message["reasoning_content"] = response.reasoning
    body = _envelope("chat.completion", completion_id, model, created)
    body["choices"] = [{"index": 0, "message": message, "finish_reason": response.finish_reason}]
    if usage is not None:
        body["usage"] = usage
    return body


def _tokens(text: str) -> int:
    return (len(text) + 3) // 4


def usage_body(messages: Sequence[Any], reply: Reply, tools: Any = None) -> dict[str, int]:
    """The ``usage`` object for ``reply`` to ``messages``: prompt tokens from the JSON of the
    messages and tools (the model reads both), completion tokens from the reply's text,
    reasoning and tool calls."""
    prompt = _tokens(json.dumps([messages, tools or []], ensure_ascii=False, separators=(",", ":")))
    response = reply.response
    text = (response.content or "") + (response.reasoning or "")
    text += "".join(call.name + call.arguments for call in response.tool_calls)
    completion = max(1, _tokens(text))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def stream_chunks(
    reply: Reply, *, completion_id: str, model: str, created: int, chunk_size: int,
    usage: dict[str, int] | None = None,
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects for ``reply``, in sending order; ``usage`` (if not
    None) goes in a last chunk with empty ``choices``, as OpenAI sends it.

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
    if usage is not None:
        last = _envelope("chat.completion.chunk", completion_id, model, created)
        last["choices"] = []
        last["usage"] = usage
        yield last


def error_body(message: str, kind: str = "server_error") -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def models_body() -> dict[str, Any]:
    """The ``GET /v1/models`` listing."""
    model = {"id": FAKE_MODEL, "object": "model", "created": 0, "owned_by": "myagent"}
    return {"object": "list", "data": [model]}
