"""Token usage and budgets end to end: a real server whose sandboxes call `myagent-ws fake-llm`
(FakeLLMServer on 127.0.0.1) through the official openai SDK over HTTP.

Checks that the usage in terminal events, session totals, /status and /metrics are exactly what
the fake LLM reported; that an unknown usage stays unknown; that a spent daily budget refuses a
turn before the LLM is asked (its request counter does not move); that a per-turn limit stops a
turn between two requests; that balances survive a restart (SQLite) and are shared by two nodes
(Redis).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Iterator

import pytest

from myagent.agents.llm.fake_server import FakeLLMServer
from tests.serverproc import AGENTS, ServerProcess
from tests.supervisor.store.conftest import redis_server  # noqa: F401 - the fixture (a real redis-server)

from .helpers import assert_turn

TEST_AGENT = AGENTS / "test_agent.py"
SCRIPT = {
    "rules": [{"match": "weather", "steps": [
        {"content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"content": "It is {tool_result}."},
    ]}, {"match": "crash", "steps": [{"content": "", "tool_calls": [{"name": "hard_exit", "arguments": {}}]}]}],
    "default": [{"content": "You said: {user}"}],
    "chunk_size": 4,
}
TOKEN = "usage-test-token-1"
OTHER_TOKEN = "usage-test-token-2"
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(SCRIPT) as server:
        yield server


@pytest.fixture
def serve(fake: FakeLLMServer) -> Iterator[Callable[..., ServerProcess]]:
    """``serve(*args, env=...)``: a server whose agent talks to ``fake`` (stopped after the test)."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, agent: Path = TEST_AGENT) -> ServerProcess:
        srv = ServerProcess(agent, "--workers", "1", *args, llm="openai",
                            env={"OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": "sk-test", **(env or {})})
        started.append(srv)
        return srv.start(timeout=30)

    yield start
    for srv in started:
        srv.stop()


def delta(after: dict, before: dict) -> dict:
    return {key: after[key] - before[key] for key in TOKEN_FIELDS}


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == want:
            return float(match.group(2))
    raise AssertionError(f"{name}{{{want}}} not in /metrics")


async def test_usage_is_what_the_llm_reported(fake, serve, open_client):
    srv = serve("--store", "memory:")
    client = await open_client(srv.url)
    session = await client.create_session()
    assert session.created["metadata"]["usage"]["turns"] == 0

    before = fake.stats
    final, events = await session.ask("weather please")
    assert_turn(events, session.id)
    usage = final["metadata"]["usage"]
    after = fake.stats
    assert after["requests"] - before["requests"] == 2 == usage["llm_requests"]  # tool call, then the answer
    assert {k: usage[k] for k in TOKEN_FIELDS} == delta(after, before)
    assert usage["total_tokens"] > 50 and usage["unknown_requests"] == 0 and usage["model"] == "gpt-4o-mini"
    assert usage["llm_ms"] > 0 and usage["tool_ms"] >= 0
    # Streamed, with usage asked for through stream_options (the SDK's request, seen by the endpoint).
    assert fake.chat_requests[-1]["stream_options"] == {"include_usage": True}

    # A provider that reports nothing: unknown, not zero-guessed, and not added to the tokens.
    fake.report_usage = False
    final2, _ = await session.ask("hello")
    unknown = final2["metadata"]["usage"]
    assert unknown["llm_requests"] == 1 == unknown["unknown_requests"] and unknown["total_tokens"] == 0
    assert fake.stats["unreported"] == 1

    # Session totals: on reconnect, in /status; counters by agent and model on /metrics.
    other = await open_client(srv.url)
    _, replayed = await other.reconnect(session.id, session.resume_token, session.last_seq)
    totals = replayed[-1]["metadata"]["usage"]
    assert {k: totals[k] for k in TOKEN_FIELDS} == {k: usage[k] for k in TOKEN_FIELDS}
    assert totals["turns"] == 2 and totals["llm_requests"] == 3 and totals["unknown_requests"] == 1
    status = srv.status()["usage"]
    [top] = status["top_sessions"]
    assert top["session_id"] == session.id and top["total_tokens"] == usage["total_tokens"]
    [row] = status["by_model"]
    assert (row["agent"], row["model"], row["total_tokens"], row["llm_requests"]) == (
        "test-agent", "gpt-4o-mini", usage["total_tokens"], 3)
    code, text = srv.get("/metrics")
    assert code == 200
    labels = {"agent": "test_agent", "model": "gpt-4o-mini"}  # the route name (file stem)
    assert metric(text, "myagent_ws_llm_tokens_total", type="prompt", **labels) == usage["prompt_tokens"]
    assert metric(text, "myagent_ws_llm_tokens_total", type="completion", **labels) == usage["completion_tokens"]
    assert metric(text, "myagent_ws_llm_requests_total", **labels) == 3
    assert metric(text, "myagent_ws_llm_requests_usage_unknown_total", **labels) == 1


def next_midnight() -> str:
    today = dt.datetime.now(dt.timezone.utc).date()
    return f"{today + dt.timedelta(days=1)}T00:00:00Z"


def assert_refused(final: dict, budget: str) -> None:
    meta = final["metadata"]
    assert final["event"] == "agent.interrupted", final
    assert meta["reason"] == meta["error_code"] == "BUDGET_EXCEEDED" and meta["recoverable"] is True
    assert meta["budget"] == budget
    if budget == "day":
        assert meta["resets_at"] == next_midnight()  # the next 00:00 UTC
        assert meta["resets_at"] in final["content"]


async def test_daily_budget_refuses_before_the_llm_and_survives_a_restart(fake, serve, open_client, tmp_path):
    args = ("--store", f"sqlite:///{tmp_path / 'sessions.db'}", "--budget-tokens-per-day", "100")
    env = {"MYAGENT_WS_AUTH_TOKENS": f"{TOKEN},{OTHER_TOKEN}"}
    srv = serve(*args, env=env)
    client = await open_client(srv.url, token=TOKEN)
    session = await client.create_session()
    first, _ = await session.ask("hello")  # the balance was 0: its one request runs, and spends > 100
    assert first["event"] == "agent.final_answer" and first["metadata"]["usage"]["total_tokens"] > 100

    asked = fake.stats["requests"]
    refused, events = await session.ask("hello again")
    assert_turn(events, session.id, terminal="agent.interrupted")
    assert [e["event"] for e in events] == ["agent.interrupted"]  # one event, nothing ran
    assert_refused(refused, "day")
    assert refused["metadata"]["usage"]["llm_requests"] == 0
    assert fake.stats["requests"] == asked  # the LLM saw no request
    # Another principal has a balance of its own.
    other = await open_client(srv.url, token=OTHER_TOKEN)
    answered, _ = await (await other.create_session()).ask("hello")
    assert answered["event"] == "agent.final_answer"
    assert srv.status()["usage"]["budgets"]["turns_refused_before_dispatch"] == 1

    # A restart on the same file: the token's balance is still spent, for a brand-new session too.
    assert srv.stop() == 0
    srv = serve(*args, env=env)
    again = await (await open_client(srv.url, token=TOKEN)).create_session()
    asked = fake.stats["requests"]
    refused, _ = await again.ask("hello after the restart")
    assert_refused(refused, "day")
    assert fake.stats["requests"] == asked
    # The session's totals came back with it from the file.
    _, replayed = await (await open_client(srv.url, token=TOKEN)).reconnect(session.id, session.resume_token,
                                                                            session.last_seq)
    totals = replayed[-1]["metadata"]["usage"]
    assert totals["turns"] == 2 and totals["total_tokens"] == first["metadata"]["usage"]["total_tokens"]


async def test_per_session_budget_without_auth(fake, serve, open_client):
    srv = serve("--store", "memory:", "--budget-tokens-per-day", "100")
    client = await open_client(srv.url)
    spender = await client.create_session()
    await spender.ask("hello")
    refused, _ = await spender.ask("more")
    assert_refused(refused, "day")
    fresh, _ = await (await client.create_session()).ask("hi")  # without auth the session holds the budget
    assert fresh["event"] == "agent.final_answer"


async def test_a_turn_whose_sandbox_dies_is_still_charged(fake, serve, open_client):
    """The LLM spent tokens, then a tool killed the sandbox: the turn's usage is unknown (null), but
    the tokens its sandbox reported as the request ended are charged to the balance."""
    srv = serve("--store", "memory:", "--budget-tokens-per-day", "100", env={"MYAGENT_WS_AUTH_TOKENS": TOKEN},
                agent=AGENTS / "chaos_agent.py")
    session = await (await open_client(srv.url, token=TOKEN)).create_session()
    crashed, _ = await session.ask("crash now")
    assert crashed["event"] == "agent.interrupted" and crashed["metadata"]["reason"] == "SANDBOX_CRASHED"
    assert crashed["metadata"]["usage"] is None and fake.stats["total_tokens"] > 100  # the tools alone weigh more
    asked = fake.stats["requests"]
    refused, _ = await session.ask("hello")  # restored on a new sandbox; the crashed turn spent the balance
    assert_refused(refused, "day")
    assert fake.stats["requests"] == asked


async def test_per_turn_limit_stops_before_the_next_request(fake, serve, open_client):
    srv = serve("--store", "memory:", "--max-tokens-per-turn", "20")
    session = await (await open_client(srv.url)).create_session()
    asked = fake.stats["requests"]
    final, events = await session.ask("weather please")
    assert_turn(events, session.id, terminal="agent.interrupted")
    assert_refused(final, "turn")
    assert final["metadata"]["resets_at"] is None and final["metadata"]["budget_tokens"] == 20
    assert fake.stats["requests"] == asked + 1  # the tool-calling request ran; the answer was never asked
    assert final["metadata"]["usage"]["llm_requests"] == 1 and final["metadata"]["usage"]["total_tokens"] > 20
    assert "agent.tool_result" in [e["event"] for e in events]  # the tool ran; its result is in the history
    ok, _ = await session.ask("hi")  # short turns still run
    assert ok["event"] == "agent.final_answer"


async def test_two_nodes_share_one_balance_on_redis(fake, serve, open_client, redis_server, tmp_path):
    redis_py = pytest.importorskip("redis")
    import redis.asyncio  # noqa: F401 - redis_py.asyncio below
    prefix = f"budget{os.getpid()}"
    env = {"MYAGENT_WS_AUTH_TOKENS": TOKEN}

    def node(name: str) -> ServerProcess:
        return serve("--store", f"{redis_server.url}?prefix={prefix}", "--node-id", name, "--state-dir",
                     str(tmp_path / name), "--budget-tokens-per-day", "100", env=env)

    node_a, node_b = node("node-a"), node("node-b")
    on_b = await (await open_client(node_b.url, token=TOKEN)).create_session()  # before A spends anything
    spent, _ = await (await (await open_client(node_a.url, token=TOKEN)).create_session()).ask("hello")
    tokens = spent["metadata"]["usage"]["total_tokens"]
    assert tokens > 100
    # A charges the balance right after the turn (one INCRBY): wait for it to land in Redis.
    day = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    holder = "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    key = f"{prefix}:budget:{day}:{holder}"
    redis = redis_py.asyncio.Redis.from_url(redis_server.url)
    try:
        async with asyncio.timeout(10):
            while int(await redis.get(key) or 0) != tokens:
                await asyncio.sleep(0.02)
        assert 0 < await redis.ttl(key) <= 2 * 86400
    finally:
        await redis.aclose()
    asked = fake.stats["requests"]
    refused, _ = await on_b.ask("hello from the other node")
    assert_refused(refused, "day")
    assert fake.stats["requests"] == asked


async def test_the_scripted_model_reports_zero_honestly(server, open_client):
    """The suite's shared server runs the scripted model: requests counted, no tokens, nothing unknown."""
    session = await (await open_client(server.url)).create_session()
    final, _ = await session.ask("hello")
    usage = final["metadata"]["usage"]
    assert usage["llm_requests"] >= 1 and usage["unknown_requests"] == 0
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (0, 0, 0)
    assert usage["model"].startswith("scripted:")
