"""Tests for myagent.agents.llm.offline.OfflineLLM."""

from __future__ import annotations

import json

from myagent.agents.llm import LLMResponse, TextDelta
from myagent.agents.llm.offline import OfflineLLM

from ._samples import WEATHER_TOOL

TOOLS = [WEATHER_TOOL]


async def run(messages: list[dict], tools: list[dict] = TOOLS) -> LLMResponse:
    events = [e async for e in OfflineLLM().stream(messages, tools)]
    *deltas, final = events
    assert all(isinstance(d, TextDelta) for d in deltas) and isinstance(final, LLMResponse)
    assert "".join(d.text for d in deltas) == final.content
    return final


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_greeting_is_honest_and_lists_tools() -> None:
    final = await run(user("hello!"))
    assert "offline" in final.content and "not a real LLM" in final.content
    assert "get_weather" in final.content and "city: string" in final.content
    assert "days: integer (optional)" in final.content
    assert "/TOOL key=value" in final.content and final.tool_calls == []


async def test_streams_word_sized_chunks() -> None:
    events = [e async for e in OfflineLLM().stream(user("hi"), TOOLS)]
    words = [e.text for e in events[:-1]]
    assert len(words) > 10 and all(len(w.split()) == 1 for w in words)


async def test_command_becomes_tool_call() -> None:
    final = await run(user("/get_weather city=Beijing days=2"))
    assert final.content == "" and final.finish_reason == "tool_calls"
    (call,) = final.tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Beijing", "days": 2}
    assert call.id.startswith("call_offline_")


async def test_json_and_quoted_arguments() -> None:
    final = await run(user('/get_weather {"city": "北京"}'))
    assert json.loads(final.tool_calls[0].arguments) == {"city": "北京"}
    final = await run(user('/get_weather city="Rio de Janeiro" metric=true'))
    assert json.loads(final.tool_calls[0].arguments) == {"city": "Rio de Janeiro", "metric": True}


async def test_unknown_tool_lists_tools() -> None:
    final = await run(user("/teleport to=mars"))
    assert "Unknown tool 'teleport'" in final.content and "get_weather" in final.content
    assert final.tool_calls == []


async def test_bad_arguments_explained() -> None:
    final = await run(user('/get_weather {"city": '))
    assert "not valid JSON" in final.content and final.tool_calls == []


async def test_answers_from_tool_result() -> None:
    history = user("/get_weather city=Beijing") + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 25C"},
    ]
    final = await run(history)
    assert final.content == "get_weather returned: sunny, 25C" and final.tool_calls == []


async def test_no_tools() -> None:
    final = await run(user("hi"), tools=[])
    assert "no tools" in final.content
