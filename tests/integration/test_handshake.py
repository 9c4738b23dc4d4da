"""system.connected, agent.session_created and the HTTP endpoints."""

from __future__ import annotations

import asyncio

import pytest

from myagent import __version__
from myagent.protocol.events import PROTOCOL_VERSION

from .helpers import assert_valid_server_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_system_connected_fields(connect):
    client = await connect()
    hello = client.connected
    assert_valid_server_event(hello)
    assert hello["event"] == "system.connected"
    assert "session_id" not in hello and "seq" not in hello
    meta = hello["metadata"]
    assert isinstance(meta["connection_id"], str) and meta["connection_id"]
    assert meta["protocol_version"] == PROTOCOL_VERSION
    assert meta["server_version"] == __version__
    limits = meta["limits"]
    for key in ("max_message_size", "max_user_message_chars", "max_sessions_per_connection", "session_ttl",
                "replay_buffer", "heartbeat_interval"):
        assert key in limits, key
    assert limits["max_message_size"] == 1024 * 1024
    assert limits["max_user_message_chars"] == 100_000
    other = await connect()
    assert other.connection_id != client.connection_id


async def test_session_created_fields(connect):
    client = await connect()
    session = await client.create_session()
    created = session.created
    assert_valid_server_event(created)
    assert created["event"] == "agent.session_created"
    assert created["session_id"] == session.id and session.id
    assert created["seq"] == 1
    assert created["event_id"] == f"{session.id}:1"
    meta = created["metadata"]
    assert isinstance(meta["resume_token"], str) and len(meta["resume_token"]) >= 16
    assert meta["agent_name"] == "test-agent"
    assert meta["connection_id"] == client.connection_id
    tools = {t["name"]: t for t in meta["tools"]}
    assert set(tools) == {"get_weather", "slow", "dangerous", "fail"}
    assert tools["dangerous"]["requires_confirmation"] is True
    assert tools["get_weather"]["requires_confirmation"] is False
    assert tools["get_weather"]["description"] == "Weather for a city."
    # Every session gets its own id and token.
    second = await client.create_session()
    assert second.id != session.id
    assert second.resume_token != session.resume_token
    assert second.created["seq"] == 1


async def test_create_session_accepts_legacy_string_content(connect):
    client = await connect()
    # The original Python client sends content "create_session"; strings are accepted and ignored.
    session = await client.create_session(content="create_session")  # type: ignore[arg-type]
    assert session.created["event"] == "agent.session_created"
    final, _ = await session.ask("hi")
    assert final["event"] == "agent.final_answer"


def test_health(server):
    code, body = server.get("/health")
    assert code == 200
    assert body == {"status": "ok"}


def test_ready(server):
    code, body = server.get("/ready")
    assert code == 200
    assert body["ready"] is True


def test_unknown_path_is_404(server):
    code, body = server.get("/no/such/path")
    assert code == 404
    assert isinstance(body, dict) and body.get("error")


async def test_status_shape(server, connect):
    client = await connect()
    session = await client.create_session()
    await session.ask("hello")
    status = await asyncio.to_thread(server.status)
    assert status["version"] == __version__
    assert status["ready"] is True and status["draining"] is False
    assert status["agent"]["name"] == "test-agent"
    assert isinstance(status["uptime_seconds"], (int, float)) and status["uptime_seconds"] > 0
    assert status["connections"] >= 1
    sessions = status["sessions"]
    for key in ("total", "active", "detached", "turns_running"):
        assert isinstance(sessions[key], int), key
    assert sessions["total"] >= 1 and sessions["active"] >= 1
    assert sessions["total"] == sessions["active"] + sessions["detached"]
    sandboxes = status["sandboxes"]
    assert len(sandboxes) == 2
    for sb in sandboxes:
        assert isinstance(sb["pid"], int) and sb["pid"] > 0
        assert sb["state"] == "ready"
        assert isinstance(sb["sessions"], int)
    assert sum(sb["sessions"] for sb in sandboxes) == sessions["total"]
    assert len({sb["pid"] for sb in sandboxes}) == 2
    assert isinstance(status["zygote_pid"], int)
    assert status["zygote_pid"] not in {sb["pid"] for sb in sandboxes}
    assert status["totals"]["turns_started"] >= 1
