"""Admission limits and the confirmation timeout.

The module's server: --confirm-timeout 1, --max-sessions-per-connection 2.
SERVER_BUSY gets a server of its own (--workers 1 --sessions-per-worker 2).
"""

from __future__ import annotations

import asyncio

import pytest

from myagent.client import ClientError

from .helpers import assert_turn, create_fails, expect_error, system_event, wait_for_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture(scope="module")
def server_args():
    return ("--workers", "2", "--confirm-timeout", "1", "--max-sessions-per-connection", "2")


async def test_confirmation_timeout_denies_the_tool(connect):
    client = await connect()
    assert client.connected["metadata"]["limits"]["max_sessions_per_connection"] == 2
    session = await client.create_session()
    loop = asyncio.get_running_loop()
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "danger"})
    confirm, before = await wait_for_event(session, "agent.user_confirm", 5)
    asked = loop.time()
    rest = [e async for e in session.until_terminal(5)]
    waited = loop.time() - asked
    events = before + rest
    assert_turn(events, session.id)
    result = next(e for e in rest if e["event"] == "agent.tool_result")
    assert result["step_id"] == confirm["step_id"]
    assert result["metadata"]["status"] == "failed"
    assert "dangerous thing done" not in events[-1]["content"]
    assert 0.8 <= waited < 4, waited
    # Too late now.
    await session.respond(confirm["step_id"], True)
    await expect_error(session, "STEP_NOT_FOUND")
    final, _ = await session.ask("next")
    assert final["event"] == "agent.final_answer"


async def test_too_many_sessions_on_one_connection(connect):
    client = await connect()
    first = await client.create_session()
    await client.create_session()
    exc = await create_fails(client, "TOO_MANY_SESSIONS")
    assert exc.event["metadata"]["recoverable"] is True
    # Other connections are not affected by this connection's count.
    other = await connect()
    await other.create_session()
    # Closing a session makes room again.
    await first.close()
    third = await client.create_session()
    final, _ = await third.ask("hi")
    assert final["event"] == "agent.final_answer"


async def test_server_busy_when_every_sandbox_is_full(start_server, open_client):
    srv = start_server("--workers", "1", "--sessions-per-worker", "2")
    a = await open_client(srv.url)
    b = await open_client(srv.url)
    s1 = await a.create_session()
    await b.create_session()
    exc = await create_fails(a, "SERVER_BUSY")
    assert exc.event["metadata"]["recoverable"] is True
    c = await open_client(srv.url)
    await create_fails(c, "SERVER_BUSY")
    # The refused requests changed nothing: existing sessions work, and a freed slot is usable.
    final, _ = await s1.ask("still fine")
    assert final["event"] == "agent.final_answer"
    status = await asyncio.to_thread(srv.status)
    assert status["sessions"]["total"] == 2
    assert [sb["sessions"] for sb in status["sandboxes"]] == [2]
    await s1.close()
    s3 = await c.create_session()
    final, _ = await s3.ask("room again")
    assert final["event"] == "agent.final_answer"


async def test_reconnect_refused_for_too_many_sessions_leaves_the_owner_alone(connect):
    owner = await connect()
    session = await owner.create_session()
    full = await connect()
    await full.create_session()
    await full.create_session()
    with pytest.raises(ClientError) as info:
        await full.reconnect(session.id, session.resume_token, session.last_seq)
    assert info.value.code == "TOO_MANY_SESSIONS"
    # The refused takeover did not happen: no "taken over" notice, the owner keeps the session.
    with pytest.raises(TimeoutError):
        event = await system_event(owner, timeout=0.3)
        raise AssertionError(f"the owner was told: {event}")
    final, events = await session.ask("still mine?")
    assert_turn(events, session.id)
    for event in events:
        assert event["metadata"]["connection_id"] == owner.connection_id
    # Its connection dropping still detaches it, so it can be resumed elsewhere.
    await owner.close()
    await asyncio.sleep(0.2)
    other = await connect()
    resumed, replayed = await other.reconnect(session.id, session.resume_token, session.last_seq)
    assert replayed[-1]["event"] == "agent.session_resumed"
    final, _ = await resumed.ask("resumed")
    assert "Before that: still mine?" in final["content"]
