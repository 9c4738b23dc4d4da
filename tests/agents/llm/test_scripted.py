"""Tests for myagent.agents.llm.scripted.ScriptedLLM."""

from __future__ import annotations

import json
import time

import pytest

from myagent.agents.llm import LLM, LLMResponse, TextDelta
from myagent.agents.llm.scripted import ScriptedLLM

from ._samples import WEATHER_SCRIPT, WEATHER_TOOL


async def collect(llm: LLM, messages: list[dict]) -> list:
    return [event async for event in llm.stream(messages, [WEATHER_TOOL])]


async def test_streams_deltas_then_one_response() -> None:
    llm = ScriptedLLM(WEATHER_SCRIPT)
    events = await collect(llm, [{"role": "user", "content": "hi"}])
    *deltas, final = events
    assert all(isinstance(d, TextDelta) for d in deltas) and isinstance(final, LLMResponse)
    assert "".join(d.text for d in deltas) == final.content == "北京 ☀️ You said: hi"
    assert isinstance(llm, LLM) and llm.name == "scripted:<script>"


async def test_tool_call_step() -> None:
    events = await collect(ScriptedLLM(WEATHER_SCRIPT), [{"role": "user", "content": "weather?"}])
    final = events[-1]
    assert final.reasoning == "The user wants weather for weather?"
    assert json.loads(final.tool_calls[0].arguments) == {"city": "北京 Beijing", "days": 3}


async def test_default_is_echo_and_file_path(tmp_path) -> None:
    assert (await collect(ScriptedLLM(), [{"role": "user", "content": "yo"}]))[-1].content == "You said: yo"
    path = tmp_path / "s.json"
    path.write_text('{"default": [{"content": "from file"}]}', encoding="utf-8")
    llm = ScriptedLLM(str(path))
    assert llm.name == f"scripted:{path}"
    assert (await collect(llm, [{"role": "user", "content": "x"}]))[-1].content == "from file"


def test_bad_path_fails_at_construction(tmp_path) -> None:
    with pytest.raises(ValueError, match="file not found"):
        ScriptedLLM(str(tmp_path / "nope.json"))


async def test_delays_are_opt_in() -> None:
    fast = ScriptedLLM({"default": [{"content": "x" * 400}], "chunk_size": 1})
    start = time.perf_counter()
    for _ in range(20):
        await collect(fast, [{"role": "user", "content": "hi"}])
    assert time.perf_counter() - start < 0.5
    slow = ScriptedLLM({"default": [{"content": "abcd", "delay_ms": 50}], "chunk_size": 1, "token_delay_ms": 20})
    start = time.perf_counter()
    await collect(slow, [{"role": "user", "content": "hi"}])
    assert time.perf_counter() - start >= 0.05 + 3 * 0.02 - 0.01
