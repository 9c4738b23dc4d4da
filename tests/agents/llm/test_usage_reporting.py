"""Token usage on the wire: fake-llm reports it like OpenAI (asked for with stream_options when
streaming), OpenAILLM reads it through the official SDK, and a silent provider stays unknown."""

from __future__ import annotations

import json
import urllib.request

import openai
import orjson
import pytest

from myagent.agents.llm import OpenAILLM
from myagent.agents.llm.fake_server import FakeLLMServer
from myagent.agents.llm.fake_wire import usage_body
from myagent.agents.llm.script import coerce_script, plan_reply
from myagent.agents.usage import TokenUsage

from ._samples import WEATHER_SCRIPT
from .test_fake_server import WEATHER, post, sse_events


def expected(messages: list) -> dict:
    return usage_body(messages, plan_reply(coerce_script(WEATHER_SCRIPT), messages))


def test_a_stream_ends_with_a_usage_chunk_only_when_asked(fake_llm_server: FakeLLMServer) -> None:
    plain = sse_events(post(fake_llm_server, {"messages": WEATHER, "stream": True}))
    assert all("usage" not in e for e in plain)
    asked = sse_events(post(fake_llm_server, {"messages": WEATHER, "stream": True,
                                              "stream_options": {"include_usage": True}}))
    assert asked[-1]["choices"] == [] and asked[-1]["usage"] == expected(WEATHER)
    assert all("usage" not in e for e in asked[:-1])
    usage = expected(WEATHER)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 10
    stats = fake_llm_server.stats
    assert stats["requests"] == 2 and stats["reported"] == 1 and stats["unreported"] == 1
    assert stats["total_tokens"] == usage["total_tokens"]


def test_report_usage_off_and_the_stats_endpoint(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.report_usage = False
    body = json.loads(post(fake_llm_server, {"messages": WEATHER}).body)
    assert "usage" not in body
    with urllib.request.urlopen(fake_llm_server.url + "/fake/stats", timeout=5) as response:
        assert json.loads(response.read()) == {"requests": 1, "prompt_tokens": 0, "completion_tokens": 0,
                                               "total_tokens": 0, "reported": 0, "unreported": 1}


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "plain"])
async def test_openai_llm_reads_the_usage_through_the_sdk(fake_llm_server: FakeLLMServer, streaming: bool) -> None:
    llm = OpenAILLM(model="m", base_url=fake_llm_server.url, max_retries=0, streaming=streaming)
    try:
        items = [i async for i in llm.stream_json([orjson.dumps(m) for m in WEATHER], b"")]
    finally:
        await llm.aclose()
    usage = expected(WEATHER)
    assert items[-1].usage == TokenUsage(usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])


@pytest.mark.parametrize("how", ["option off", "provider silent"])
async def test_no_usage_is_unknown(fake_llm_server: FakeLLMServer, how: str, monkeypatch) -> None:
    if how == "option off":
        monkeypatch.setenv("MYAGENT_LLM_STREAM_USAGE", "0")
    else:
        fake_llm_server.report_usage = False
    llm = OpenAILLM(model="m", base_url=fake_llm_server.url, max_retries=0)
    try:
        items = [i async for i in llm.stream_json([orjson.dumps(m) for m in WEATHER], b"")]
    finally:
        await llm.aclose()
    assert items[-1].usage is None
    assert ("stream_options" in fake_llm_server.chat_requests[-1]) is (how != "option off")


async def test_the_sdk_sees_the_usage_chunk_as_openai_sends_it(fake_llm_server: FakeLLMServer) -> None:
    """The typed SDK path (what third-party clients use) parses the final usage chunk."""
    async with openai.AsyncOpenAI(base_url=fake_llm_server.url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="m", messages=WEATHER, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == expected(WEATHER)["total_tokens"]
