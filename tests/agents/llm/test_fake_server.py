"""Tests for FakeLLMServer: wire shapes over raw HTTP and through the openai SDK."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import openai
import pytest

from myagent.agents.llm.fake_server import MAX_RECORDED, FakeLLMServer, serve_forever_cli

WEATHER = [{"role": "user", "content": "weather?"}]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def post(server: FakeLLMServer, body: object, path: str = "/v1/chat/completions") -> Reply:
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def sse_events(response: Reply) -> list:
    text = response.body.decode()
    assert text.endswith("data: [DONE]\n\n")
    frames = [f for f in text.split("\n\n") if f]
    return [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]


def test_stream_chunk_shapes(fake_llm_server: FakeLLMServer) -> None:
    response = post(fake_llm_server, {"model": "m", "messages": WEATHER, "stream": True})
    assert response.status == 200 and response.headers["content-type"] == "text/event-stream"
    events = sse_events(response)
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "m" for e in events)
    deltas = [e["choices"][0]["delta"] for e in events]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check."
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "call_1_0_0", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    pieces = [c["function"]["arguments"] for c in calls[1:]]
    assert len(pieces) > 3 and all(c["index"] == 0 and "id" not in c for c in calls[1:])
    assert json.loads("".join(pieces)) == {"city": "北京 Beijing", "days": 3}
    assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}


async def test_sdk_non_streaming_and_models(fake_llm_server: FakeLLMServer) -> None:
    async with openai.AsyncOpenAI(base_url=fake_llm_server.url, api_key="x", max_retries=0) as client:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["fake-model"]
        completion = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    message = completion.choices[0].message
    assert message.content == "北京 ☀️ You said: hi" and completion.choices[0].finish_reason == "stop"


async def test_sdk_stream_aggregates(fake_llm_server: FakeLLMServer) -> None:
    async with openai.AsyncOpenAI(base_url=fake_llm_server.url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="m", messages=WEATHER, stream=True)
        finish = [c.choices[0].finish_reason async for c in stream if c.choices]
    assert finish[-1] == "tool_calls"


def test_fail_first_n_then_status_override(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.fail_first_n = 1
    first = post(fake_llm_server, {"messages": WEATHER})
    assert first.status == 500 and first.headers["retry-after-ms"] == "5"
    assert "fake failure on request 1" in json.loads(first.body)["error"]["message"]
    assert post(fake_llm_server, {"messages": WEATHER}).status == 200
    fake_llm_server.status_code = 429
    assert post(fake_llm_server, {"messages": WEATHER}).status == 429


def test_bad_requests(fake_llm_server: FakeLLMServer) -> None:
    assert post(fake_llm_server, {"nope": 1}).status == 400
    assert post(fake_llm_server, {"messages": "x"}).status == 400
    assert post(fake_llm_server, {"messages": []}, path="/v1/other").status == 404
    assert fake_llm_server.request_count == 0


def test_recording_is_bounded() -> None:
    with FakeLLMServer() as server:
        for i in range(MAX_RECORDED + 5):
            post(server, {"messages": [{"role": "user", "content": str(i)}]})
        assert server.request_count == MAX_RECORDED + 5
        recorded = server.chat_requests
    assert len(recorded) == MAX_RECORDED and recorded[-1]["messages"][0]["content"] == str(MAX_RECORDED + 4)


def test_ttft_and_token_delay() -> None:
    with FakeLLMServer({"default": [{"content": "abcdefgh"}], "chunk_size": 2}, ttft_ms=150, token_delay_ms=40) as server:
        start = time.monotonic()
        response = post(server, {"messages": WEATHER, "stream": True})
        sse_events(response)
        elapsed = time.monotonic() - start
    # 150 ms to first byte, then 4 more chunks (3 content + finish) 40 ms apart
    assert 0.15 + 4 * 0.04 - 0.02 <= elapsed < 1.5


def test_stop_cuts_delays_short_and_is_idempotent() -> None:
    server = FakeLLMServer(ttft_ms=10_000).start()
    url = server.url
    start = time.monotonic()
    server.stop()
    server.stop()
    assert time.monotonic() - start < 1 and url.startswith("http://127.0.0.1:")


def test_cli_bad_script_exits_cleanly(tmp_path) -> None:
    with pytest.raises(SystemExit, match="file not found"):
        serve_forever_cli("127.0.0.1", 0, str(tmp_path / "missing.json"), 0, 0)


def test_cli_serves_until_sigterm() -> None:
    code = "from myagent.agents.llm.fake_server import serve_forever_cli as s; s('127.0.0.1', 0, None, 0, 0)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("fake OpenAI-compatible LLM on http://127.0.0.1:") and line.endswith("/v1\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
