"""One SDK client per process and endpoint, made after the fork; requests joined from
encoded history. The real openai SDK over HTTP against FakeLLMServer on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
import warnings
from typing import Any, Iterator

import orjson
import pytest

from myagent import create_toolcall_agent
from myagent.agents.llm.fake_server import FakeLLMServer
from myagent.agents.llm.openai_client import client_count, forget_closed_loops
from myagent.agents.llm.openai_llm import OpenAILLM
from myagent.tool.base_tool import BaseTool, ToolResult

from ._samples import WEATHER_TOOL

# Every test with each HTTP client under the SDK (httpx, and aiohttp when installed).
pytestmark = pytest.mark.usefixtures("http_transport")

# Three streamed requests per user message, as in the benchmark: two tool calls, an answer.
SCRIPT = {
    "chunk_size": 4,
    "default": [
        {"content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Beijing"}}]},
        {"content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Shanghai"}}]},
        {"content": "Sunny in both."},
    ],
}


class GetWeather(BaseTool):
    name = "get_weather"
    description = "Weather for a city."
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

    async def execute(self, city: str) -> ToolResult:
        return ToolResult(output=f"{city}: sunny")


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(SCRIPT) as fake:
        yield fake


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        forget_closed_loops()
        gc.collect()
    yield


@pytest.fixture
def openai_env(server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent names its provider by spec, as agent files do; the endpoint comes from the environment.
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MYAGENT_LLM_MAX_RETRIES", "0")


def make_agent() -> Any:
    return create_toolcall_agent(name="w", tools=[GetWeather()], system_prompt="Be brief.", llm="openai:fake")


async def test_sessions_share_one_client_and_keep_its_connection(server: FakeLLMServer, openai_env: None) -> None:
    prototype = make_agent()
    agents = [prototype.clone() for _ in range(10)]
    assert client_count() == 0  # nothing is made before the first request
    for agent in agents:
        assert await agent.arun("weather?") == "Sunny in both."
    assert client_count() == 1
    assert server.request_count == 30
    assert server.connection_count == 1  # one keep-alive connection served all 30 requests
    assert len({id(agent.llm) for agent in agents}) == 1
    await prototype.llm.aclose()
    assert client_count() == 0


async def test_concurrent_sessions_reuse_the_pool(server: FakeLLMServer, openai_env: None) -> None:
    prototype = make_agent()
    agents = [prototype.clone() for _ in range(20)]
    await asyncio.gather(*(agent.arun("weather?") for agent in agents))
    opened = server.connection_count
    assert 1 <= opened <= 20
    await asyncio.gather(*(agent.arun("again?") for agent in agents))
    assert server.connection_count == opened  # the second round found its connections alive
    assert client_count() == 1
    await prototype.llm.aclose()


def test_the_client_is_made_after_the_fork_in_the_child(server: FakeLLMServer, openai_env: None) -> None:
    """The zygote imports the agent file and forks: no client may exist before the fork, and a
    registry inherited from the parent must not be used by the child (its sockets are the parent's)."""
    prototype = make_agent()
    parent_loop = asyncio.new_event_loop()
    try:
        # The parent has a live client on a live loop when it forks.
        assert parent_loop.run_until_complete(prototype.clone().arun("weather?")) == "Sunny in both."
        assert client_count() == 1
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave without running any parent cleanup
            code = 1
            try:
                os.close(read_end)
                inherited = client_count()

                async def child() -> tuple[int, str, int]:
                    answer = await prototype.clone().arun("weather?")
                    made = client_count()
                    await prototype.llm.aclose()
                    return inherited, answer, made

                os.write(write_end, orjson.dumps(asyncio.run(child())))
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            report = orjson.loads(pipe.read())
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert report == [0, "Sunny in both.", 1]  # dropped the parent's, made its own, answered
        assert client_count() == 1  # the parent's own client is untouched
        assert server.connection_count == 2
        parent_loop.run_until_complete(prototype.llm.aclose())
    finally:
        parent_loop.close()


async def test_request_body_is_the_encoded_history(server: FakeLLMServer) -> None:
    llm = OpenAILLM(model="m", base_url=server.url, max_retries=0)
    messages = [{"role": "user", "content": "héllo 👋"}]
    try:
        events = [e async for e in llm.stream_json([orjson.dumps(m) for m in messages], orjson.dumps([WEATHER_TOOL]))]
        assert events[-1].content == "Sunny in both." or events[-1].tool_calls
        sent = server.chat_requests[-1]
        assert sent == {"model": "m", "stream": True, "stream_options": {"include_usage": True},
                        "tools": [WEATHER_TOOL], "messages": messages}
        [e async for e in llm.stream_json([orjson.dumps(m) for m in messages], b"")]
        assert "tools" not in server.chat_requests[-1]  # OpenAI rejects an empty tools list
    finally:
        await llm.aclose()


async def test_idle_sessions_are_small(server: FakeLLMServer, openai_env: None) -> None:
    """Memory an idle session keeps after one turn (agent, history, its share of the pool):
    the target is at most 64 KiB; each session once held its own client (~0.9 MB)."""
    prototype = make_agent()
    await prototype.clone().arun("warm up")  # imports, the shared client, the first connection
    count = 200
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        sessions = [prototype.clone() for _ in range(count)]
        for start in range(0, count, 50):  # 50 at a time: a realistic share of pooled connections
            await asyncio.gather(*(agent.arun("weather?") for agent in sessions[start:start + 50]))
        gc.collect()
        per_session = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert client_count() == 1
    print(f"{per_session / 1024:.1f} KiB per idle session")
    assert per_session <= 64 * 1024, f"{per_session / 1024:.1f} KiB per idle session"
    await prototype.llm.aclose()


def test_http_client_choice_and_pool_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from myagent.agents.llm import LLMError
    from myagent.agents.llm.openai_client import http_transport

    monkeypatch.setenv("MYAGENT_LLM_HTTP", "httpx")
    assert http_transport() == "httpx"
    monkeypatch.setenv("MYAGENT_LLM_HTTP", "")
    assert http_transport() == ("aiohttp" if importlib.util.find_spec("aiohttp") else "httpx")
    monkeypatch.setenv("MYAGENT_LLM_MAX_CONNECTIONS", "7")
    assert OpenAILLM(base_url="http://127.0.0.1:9/v1")._key.max_connections == 7
    monkeypatch.setenv("MYAGENT_LLM_MAX_CONNECTIONS", "0")
    with pytest.raises(LLMError, match="MYAGENT_LLM_MAX_CONNECTIONS"):
        OpenAILLM(base_url="http://127.0.0.1:9/v1")
