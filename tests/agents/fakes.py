"""A tiny in-test LLM implementing the ``LLM`` protocol, plus history checks."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from myagent.agents.llm.base import LLMResponse, TextDelta, ToolCall
from myagent.agents.usage import TokenUsage


@dataclass
class Step:
    """One scripted model step.

    ``deltas`` defaults to ``content`` cut into 3-character chunks. ``error``
    is raised after the deltas; ``hang`` waits forever after the deltas
    (``streaming`` is set once they are out), for cancellation tests.
    """

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    deltas: list[str] | None = None
    reasoning: str | None = None
    error: BaseException | None = None
    hang: bool = False
    usage: TokenUsage | None = None  # what the "provider" reports (None: nothing)


def answer(text: str, **kwargs: Any) -> Step:
    return Step(content=text, **kwargs)


def call(name: str, args: dict[str, Any] | str = "{}", id: str | None = None) -> ToolCall:
    raw = args if isinstance(args, str) else json.dumps(args)
    return ToolCall(id=id or f"call_{name}", name=name, arguments=raw)


def use(*calls: ToolCall, content: str = "", usage: TokenUsage | None = None) -> Step:
    return Step(content=content, tool_calls=list(calls), usage=usage)


class FakeLLM:
    """Replays ``steps`` in order; past the end, answers "done"."""

    name = "fake"

    def __init__(self, *steps: Step | BaseException):
        self.steps = list(steps)
        self.calls: list[tuple[list[dict], list[dict]]] = []
        self.streaming = asyncio.Event()

    async def stream(self, messages: list[dict], tools: list[dict]) -> AsyncIterator[TextDelta | LLMResponse]:
        self.calls.append((copy.deepcopy(messages), tools))
        step = self.steps.pop(0) if self.steps else answer("done")
        if isinstance(step, BaseException):
            raise step
        deltas = step.deltas
        if deltas is None:
            deltas = [step.content[i:i + 3] for i in range(0, len(step.content), 3)]
        for text in deltas:
            yield TextDelta(text)
        self.streaming.set()
        if step.hang:
            await asyncio.Event().wait()
        if step.error is not None:
            raise step.error
        yield LLMResponse(
            content=step.content,
            tool_calls=list(step.tool_calls),
            reasoning=step.reasoning,
            finish_reason="tool_calls" if step.tool_calls else "stop",
            usage=step.usage,
        )


def assert_consistent(history: list[dict]) -> None:
    """Every assistant tool call is answered right after it; no orphan results; no system role."""
    pending: list[str] = []
    for message in history:
        assert message["role"] in {"user", "assistant", "tool"}, message
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, f"orphan tool result {message}"
            pending.remove(message["tool_call_id"])
            continue
        assert not pending, f"unanswered tool calls {pending} before {message}"
        if message["role"] == "assistant":
            assert isinstance(message["content"], str)
            pending = [c["id"] for c in message.get("tool_calls", [])]
    assert not pending, f"unanswered tool calls {pending} at the end"
