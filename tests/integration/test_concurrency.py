"""Many connections and sessions at once: ordering, isolation, one turn at a time."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import assert_seqs, assert_turn, expect_error, no_more_events, wait_for_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

CONNECTIONS = 20
SESSIONS_PER_CONNECTION = 3
TURNS = 3


async def test_interleaved_sessions_on_many_connections(connect, server):
    clients = await asyncio.gather(*(connect() for _ in range(CONNECTIONS)))
    sessions_of = {}
    for client in clients:
        sessions_of[client] = await asyncio.gather(
            *(client.create_session() for _ in range(SESSIONS_PER_CONNECTION)))

    async def converse(client, index, session):
        tag = f"c{clients.index(client)}s{index}"
        for turn in range(1, TURNS + 1):
            text = f"{tag} weather" if turn == 2 else f"{tag} message {turn}"
            final, events = await session.ask(text, timeout=15)
            assert_turn(events, session.id)
            for event in events:
                assert event["metadata"]["connection_id"] == client.connection_id
            if turn != 2:
                assert final["content"].startswith(f"You said: {text}."), final
                assert f"Turn {turn}." in final["content"]
            if turn == 3:
                # Memory is per session, never mixed up with another one.
                assert f"Before that: {tag} weather" in final["content"], final

    await asyncio.gather(*(converse(client, i, s)
                           for client, sessions in sessions_of.items()
                           for i, s in enumerate(sessions)))

    all_ids = {s.id for sessions in sessions_of.values() for s in sessions}
    assert len(all_ids) == CONNECTIONS * SESSIONS_PER_CONNECTION
    for client, sessions in sessions_of.items():
        for session in sessions:
            assert_seqs(session.history, session.id, 1)
            assert all(e.get("session_id") == session.id for e in session.history)
            await no_more_events(session, 0.01)
        # No event of a session this connection does not own ever reached it.
        stray = []
        while not client.system.empty():
            event = client.system.get_nowait()
            if event.get("session_id") or event["event"] != "system.heartbeat":
                stray.append(event)
        assert not stray, stray
    status = await asyncio.to_thread(server.status)
    # Sessions were spread over both sandboxes.
    assert all(sb["sessions"] > 0 for sb in status["sandboxes"]), status["sandboxes"]


async def test_second_message_while_a_turn_runs_is_session_busy_with_reject(connect):
    client = await connect()
    session = await client.create_session()
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "slow"})
    await wait_for_event(session, "agent.tool_call", 5)
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "hello",
                             "metadata": {"multitask": "reject"}})
    err = await expect_error(session, "SESSION_BUSY")
    assert err["metadata"]["recoverable"] is True
    assert err["metadata"]["session_id"] == session.id
    # Another session of the same connection is not blocked.
    other = await client.create_session()
    final, _ = await other.ask("meanwhile")
    assert final["event"] == "agent.final_answer"
    # The busy turn is intact: cancel it, then the session takes messages again.
    await session.cancel()
    rest = [e async for e in session.until_terminal(5)]
    assert rest[-1]["event"] == "agent.interrupted"
    assert [e["event"] for e in rest].count("agent.interrupted") == 1
    final, events = await session.ask("after busy")
    assert_turn(events, session.id)
    # The refused message never became a turn: the answer remembers "slow", not "hello".
    assert "Before that: slow" in final["content"], final["content"]
    assert_seqs([e for e in session.history if "seq" in e], session.id, 1)


async def test_sessions_with_slow_turns_run_in_parallel(connect):
    """Five 3-second turns at once finish in about 3 s, not 15."""
    client = await connect()
    sessions = await asyncio.gather(*(client.create_session() for _ in range(5)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(s.ask("slow", timeout=10) for s in sessions))
    elapsed = loop.time() - started
    for session, (final, events) in zip(sessions, results):
        assert_turn(events, session.id)
        assert final["content"] == "Finished: slept 3s"
    assert elapsed < 6, elapsed
