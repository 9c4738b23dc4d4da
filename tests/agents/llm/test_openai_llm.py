"""Tests for OpenAILLM: the real openai SDK over HTTP against FakeLLMServer."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from typing import AsyncIterator

import pytest

from myagent.agents.llm import LLMError, LLMResponse, OpenAILLM, TextDelta
from myagent.agents.llm.fake_server import FakeLLMServer

from ._samples import WEATHER_TOOL

# Every test with each HTTP client under the SDK (httpx, and aiohttp when installed).
pytestmark = pytest.mark.usefixtures("http_transport")


@pytest.fixture
async def llm(fake_llm_server: FakeLLMServer) -> AsyncIterator[OpenAILLM]:
    client = OpenAILLM(model="test-model", base_url=fake_llm_server.url, timeout=5, max_retries=2)
    yield client
    await client.aclose()


async def collect(llm: OpenAILLM, messages: list[dict], tools: list[dict] | None = None) -> list:
    return [e async for e in llm.stream(messages, [WEATHER_TOOL] if tools is None else tools)]


def split(events: list) -> tuple[list[str], LLMResponse]:
    *deltas, final = events
    assert all(isinstance(d, TextDelta) for d in deltas) and isinstance(final, LLMResponse)
    return [d.text for d in deltas], final


async def test_streamed_text_reassembled_exactly(llm: OpenAILLM, fake_llm_server: FakeLLMServer) -> None:
    deltas, final = split(await collect(llm, [{"role": "user", "content": "héllo {user} 👋"}]))
    expected = "北京 ☀️ You said: héllo {user} 👋"
    assert "".join(deltas) == final.content == expected
    assert len(deltas) == -(-len(expected) // 3)  # chunk_size 3: every delta arrived on its own
    assert final.finish_reason == "stop" and final.tool_calls == []
    sent = fake_llm_server.chat_requests[-1]
    assert sent["model"] == "test-model" and sent["stream"] is True
    assert sent["tools"] == [WEATHER_TOOL]
    assert fake_llm_server.requests[-1]["headers"]["authorization"] == "Bearer not-needed"


async def test_tool_call_assembled_from_split_arguments(llm: OpenAILLM) -> None:
    deltas, final = split(await collect(llm, [{"role": "user", "content": "weather in Beijing?"}]))
    assert "".join(deltas) == "Let me check."
    (call,) = final.tool_calls
    assert (call.id, call.name) == ("call_1_0_0", "get_weather")
    assert json.loads(call.arguments) == {"city": "北京 Beijing", "days": 3}
    assert final.reasoning == "The user wants weather for weather in Beijing?"
    assert final.finish_reason == "tool_calls"


async def test_history_round_trip(llm: OpenAILLM, fake_llm_server: FakeLLMServer) -> None:
    history = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1_0_0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1_0_0", "content": "rain 12°C"},
    ]
    _, final = split(await collect(llm, history))
    assert final.content == "Weather: rain 12°C"
    assert fake_llm_server.chat_requests[-1]["messages"] == history


async def test_empty_tools_not_sent(llm: OpenAILLM, fake_llm_server: FakeLLMServer) -> None:
    await collect(llm, [{"role": "user", "content": "hi"}], tools=[])
    assert "tools" not in fake_llm_server.chat_requests[-1]


async def test_non_streaming_mode(fake_llm_server: FakeLLMServer) -> None:
    llm = OpenAILLM(base_url=fake_llm_server.url, streaming=False, timeout=5)
    try:
        deltas, final = split(await collect(llm, [{"role": "user", "content": "weather?"}]))
    finally:
        await llm.aclose()
    assert deltas == ["Let me check."]
    assert json.loads(final.tool_calls[0].arguments)["days"] == 3
    assert final.reasoning is not None and fake_llm_server.chat_requests[-1]["stream"] is False


async def test_one_failure_is_retried(llm: OpenAILLM, fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.fail_first_n = 1
    _, final = split(await collect(llm, [{"role": "user", "content": "hi"}]))
    assert final.content.endswith("You said: hi")
    assert fake_llm_server.request_count == 2


async def test_persistent_failure_raises_llm_error(llm: OpenAILLM, fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.fail_first_n = 10
    with pytest.raises(LLMError, match=r"HTTP 500 after 3 attempts: fake failure"):
        await collect(llm, [{"role": "user", "content": "hi"}])
    assert fake_llm_server.request_count == 3


async def test_client_error_not_retried(llm: OpenAILLM, fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.status_code = 401
    with pytest.raises(LLMError, match=r"HTTP 401 \(check OPENAI_API_KEY\)") as info:
        await collect(llm, [{"role": "user", "content": "hi"}])
    assert "attempt" not in str(info.value) and fake_llm_server.request_count == 1


async def test_endpoint_down_is_bounded(closed_port_url: str) -> None:
    llm = OpenAILLM(base_url=closed_port_url, max_retries=1, timeout=5)
    start = time.monotonic()
    with pytest.raises(LLMError) as info:
        await collect(llm, [{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 10
    assert str(info.value) == f"LLM endpoint unreachable at {closed_port_url} after 2 attempts"


async def test_overall_deadline_cuts_slow_server(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.ttft_ms = 2000
    llm = OpenAILLM(base_url=fake_llm_server.url, timeout=0.3, max_retries=0)
    start = time.monotonic()
    with pytest.raises(LLMError, match="did not respond within 0.3 s|timed out"):
        await collect(llm, [{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 1.5


async def test_ttft_respected(llm: OpenAILLM, fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.ttft_ms = 300
    start = time.monotonic()
    stream = llm.stream([{"role": "user", "content": "hi"}], [])
    first = await anext(stream)
    assert isinstance(first, TextDelta) and time.monotonic() - start >= 0.29
    await stream.aclose()


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:pw@127.0.0.1:1/v1?k=s")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MYAGENT_MODEL", "local-model")
    monkeypatch.setenv("MYAGENT_LLM_TIMEOUT", "7.5")
    monkeypatch.setenv("MYAGENT_LLM_MAX_RETRIES", "0")
    llm = OpenAILLM()
    assert (llm.name, llm.timeout, llm.max_retries) == ("openai:local-model", 7.5, 0)
    assert "pw" not in repr(llm) and "k=s" not in repr(llm)


@pytest.mark.parametrize(("var", "value"), [("MYAGENT_LLM_TIMEOUT", "soon"), ("MYAGENT_LLM_MAX_RETRIES", "-1")])
def test_bad_env_values(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv(var, value)
    with pytest.raises(LLMError, match=var):
        OpenAILLM()


def test_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        OpenAILLM()


async def test_stream_cut_mid_answer(llm: OpenAILLM, fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.cut_after_chunks = 3
    received: list[str] = []
    with pytest.raises(LLMError, match="was interrupted"):
        async for event in llm.stream([{"role": "user", "content": "hi"}], []):
            received.append(event.text)
    assert "".join(received) == "北京 ☀️ "  # role chunk + 2 deltas arrived; no retry
    assert fake_llm_server.request_count == 1


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_client_follows_event_loop(fake_llm_server: FakeLLMServer) -> None:
    # agent.run() style: a fresh event loop per call must not reuse a dead pool.
    # The first loop's keep-alive socket cannot be closed once that loop is
    # gone (callers should aclose() first), hence the ignored ResourceWarning.
    llm = OpenAILLM(base_url=fake_llm_server.url, timeout=5)
    for text in ("one", "two"):
        events = asyncio.run(collect(llm, [{"role": "user", "content": text}]))
        assert events[-1].content.endswith(f"You said: {text}")
    asyncio.run(llm.aclose())
    gc.collect()
