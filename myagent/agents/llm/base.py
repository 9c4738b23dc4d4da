"""Provider-neutral types shared by every LLM implementation.

A provider turns an OpenAI-format message history plus an OpenAI ``tools`` list
into a stream: zero or more :class:`TextDelta` (in order, none dropped) and then
exactly one :class:`LLMResponse`. Any failure surfaces as :class:`LLMError`,
whose message is safe to show to end users (no secrets, no tracebacks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Protocol, runtime_checkable

from ..usage import TokenUsage

__all__ = [
    "LLM",
    "LLMError",
    "LLMResponse",
    "TextDelta",
    "ToolCall",
    "message_text",
    "response_to_message",
]


class LLMError(Exception):
    """Any provider failure after bounded retries; the message is user-safe."""


@dataclass
class TextDelta:
    """A piece of assistant text, streamed as soon as the provider has it."""

    text: str


@dataclass
class ToolCall:
    """One tool invocation requested by the model.

    ``arguments`` is the raw JSON text as produced by the model; callers parse
    (and may reject) it, because models do emit invalid JSON.
    """

    id: str
    name: str
    arguments: str


@dataclass
class LLMResponse:
    """The complete result of one model step."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None
    finish_reason: str | None = None
    # The tokens the provider reported for this request; None when it reported none (unknown,
    # never estimated). Models that spend no tokens (offline, scripted) report ZERO_USAGE.
    usage: TokenUsage | None = None


@runtime_checkable
class LLM(Protocol):
    """What the agent runtime needs from a model provider."""

    name: str

    def stream(
        self, messages: list[dict], tools: list[dict]
    ) -> AsyncIterator[TextDelta | LLMResponse]:
        """Yield TextDelta chunks, then exactly one LLMResponse; or raise LLMError."""
        ...

    # Optional: ``stream_json(messages: Sequence[bytes], tools: bytes)``, the same stream for
    # messages already encoded as JSON (one object each, system prompt first) and the tools
    # as one JSON array (b"" for none). The agent keeps its history encoded and calls it
    # instead of stream() when a provider has it (OpenAILLM does): nothing is re-encoded.


def response_to_message(response: LLMResponse) -> dict[str, Any]:
    """Convert a response into the OpenAI assistant message to append to history.

    ``tool_calls`` is omitted when empty: several OpenAI-compatible servers
    reject an empty list. ``content`` stays a string (possibly "") so that code
    reading the history never has to special-case None.
    """
    message: dict[str, Any] = {"role": "assistant", "content": response.content}
    if response.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in response.tool_calls
        ]
    return message


def message_text(message: Mapping[str, Any]) -> str:
    """Plain text of an OpenAI message; multimodal lists contribute their text parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""
