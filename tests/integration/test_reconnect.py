"""Reconnect and replay, acks, and session isolation between connections."""

from __future__ import annotations

import asyncio

import pytest

from myagent.client import ClientError

from .helpers import (
    assert_seqs,
    assert_turn,
    assert_valid_server_event,
    expect_error,
    no_more_events,
    raw_connect,
    recv_json,
    send_json,
    system_error,
    system_event,
    wait_for_event,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_reconnect_mid_turn_replays_then_streams_live(connect):
    a = await connect()
    session = await a.create_session()
    await session.ask("remember me")
    await a.send_frame({"event": "user.message", "session_id": session.id, "content": "slow"})
    call, _ = await wait_for_event(session, "agent.tool_call", 5)
    seen_on_a = list(session.history)
    await a.close()
    await a.closed.wait()

    # Claim to have seen only up to some earlier event: everything after it is replayed.
    last_seq = call["seq"] - 2
    b = await connect()
    resumed_session, replayed = await b.reconnect(session.id, session.resume_token, last_seq)
    resumed = replayed[-1]
    replay = replayed[:-1]
    assert resumed["event"] == "agent.session_resumed"
    assert_valid_server_event(resumed)
    assert resumed["metadata"]["replayed"] == len(replay)
    assert resumed["metadata"]["turn_running"] is True
    assert "replay_gap_from" not in resumed["metadata"]
    assert resumed["metadata"]["connection_id"] == b.connection_id
    # Replayed: exactly the events after last_seq, in order, once each, byte-identical.
    assert [e["seq"] for e in replay] == list(range(last_seq + 1, call["seq"] + 1))
    assert replay == [e for e in seen_on_a if e["seq"] > last_seq]
    assert resumed["seq"] == call["seq"] + 1

    # The turn's remaining events arrive live on the new connection.
    live = [e async for e in resumed_session.until_terminal(8)]
    assert live[-1]["event"] == "agent.final_answer"
    assert live[-1]["content"] == "Finished: slept 3s"
    assert live[0]["event"] == "agent.tool_result" and live[0]["step_id"] == call["step_id"]
    for event in live:
        assert event["metadata"]["connection_id"] == b.connection_id
    # Whole session, as the client saw it across both connections: gapless, no duplicates.
    whole = [e for e in seen_on_a if e["seq"] <= last_seq] + replayed + live
    assert_seqs(whole, session.id, 1)
    turn = [e for e in whole if e["event"] != "agent.session_resumed"
            and e.get("metadata", {}).get("turn_id") == call["metadata"]["turn_id"]]
    assert [e["event"] for e in turn].count("agent.final_answer") == 1
    assert sum(e["event"] in ("agent.error", "agent.interrupted") for e in turn) == 0
    assert len({e["seq"] for e in whole}) == len(whole)

    # The session goes on, with its memory, on the new connection.
    final, _ = await resumed_session.ask("and now?")
    assert "Before that: slow" in final["content"]
    await no_more_events(resumed_session, 0.1)


async def test_reconnect_with_last_seq_zero_replays_everything(connect):
    a = await connect()
    session = await a.create_session()
    await session.ask("one")
    history = list(session.history)
    await a.close()
    b = await connect()
    _, replayed = await b.reconnect(session.id, session.resume_token, 0)
    assert replayed[:-1] == history
    assert replayed[-1]["event"] == "agent.session_resumed"
    assert replayed[-1]["metadata"]["turn_running"] is False
    assert_seqs(replayed, session.id, 1)


async def test_reconnect_up_to_date_replays_nothing(connect):
    a = await connect()
    session = await a.create_session()
    await session.ask("one")
    await a.close()
    b = await connect()
    _, replayed = await b.reconnect(session.id, session.resume_token, session.last_seq)
    assert [e["event"] for e in replayed] == ["agent.session_resumed"]
    assert replayed[0]["seq"] == session.last_seq + 1
    assert replayed[0]["metadata"]["replayed"] == 0


async def test_reconnect_with_wrong_token_is_session_not_found(connect):
    a = await connect()
    session = await a.create_session()
    b = await connect()
    with pytest.raises(ClientError) as info:
        await b.reconnect(session.id, "not-the-token", 0)
    assert info.value.code == "SESSION_NOT_FOUND"
    with pytest.raises(ClientError) as info:
        await b.reconnect("s_does_not_exist", session.resume_token, 0)
    assert info.value.code == "SESSION_NOT_FOUND"
    # Nothing was taken over: the owner still uses the session.
    final, _ = await session.ask("still mine")
    assert final["event"] == "agent.final_answer"


async def test_reconnect_takes_over_an_attached_session(connect):
    a = await connect()
    session = await a.create_session()
    b = await connect()
    taken, _ = await b.reconnect(session.id, session.resume_token, session.last_seq)
    notice = await system_event(a)
    assert notice["event"] == "system.notice" and notice["metadata"].get("taken_over") is True
    await a.send_frame({"event": "user.message", "session_id": session.id, "content": "hi"})
    await expect_error(session, "SESSION_NOT_FOUND")
    final, _ = await taken.ask("hi from b")
    assert final["event"] == "agent.final_answer"


async def test_ack_trims_the_replay_buffer(connect):
    a = await connect()
    session = await a.create_session()
    await session.ask("one")
    await session.ask("two")
    acked = session.last_seq - 3
    await session.ack(acked)
    await no_more_events(session, 0.2)  # accepted silently
    history = list(session.history)
    await a.close()
    b = await connect()
    _, replayed = await b.reconnect(session.id, session.resume_token, 2)
    resumed = replayed[-1]
    assert resumed["event"] == "agent.session_resumed"
    assert resumed["metadata"]["replay_gap_from"] == 3
    assert resumed["metadata"]["error_code"] == "REPLAY_UNAVAILABLE"
    # Only what was not acknowledged is replayed.
    assert replayed[:-1] == [e for e in history if e["seq"] > acked]


async def test_ack_in_the_original_console_style(server):
    """No session_id; content.last_event_id names the session and the seq."""
    ws = await raw_connect(server.url)
    try:
        await send_json(ws, {"event": "user.create_session"})
        created = await recv_json(ws)
        sid, token = created["session_id"], created["metadata"]["resume_token"]
        await send_json(ws, {"event": "user.message", "session_id": sid, "content": "hello"})
        events = [created]
        while events[-1]["event"] != "agent.final_answer":
            events.append(await recv_json(ws))
        acked = events[-2]["seq"]
        await send_json(ws, {"event": "user.ack", "content": {"last_event_id": f"{sid}:{acked}"},
                             "timestamp": "2024-01-01T00:00:00.000Z"})
        # Accepted: no error; the connection still answers.
        await send_json(ws, {"event": "user.cancel", "session_id": sid})
        reply = await recv_json(ws)
        assert reply["metadata"]["error_code"] == "NO_ACTIVE_TURN", reply
    finally:
        await ws.close()
    ws = await raw_connect(server.url)
    try:
        await send_json(ws, {"event": "user.reconnect", "session_id": sid,
                             "content": {"resume_token": token, "last_seq": 0}})
        replayed = [await recv_json(ws)]
        while replayed[-1]["event"] != "agent.session_resumed":
            replayed.append(await recv_json(ws))
        assert [e["seq"] for e in replayed[:-1]] == [events[-1]["seq"]]
        assert replayed[-1]["metadata"]["replay_gap_from"] == 1
    finally:
        await ws.close()


async def test_ack_without_session_or_event_id_is_rejected(connect):
    client = await connect()
    await client.send_frame({"event": "user.ack", "content": {"last_seq": 3}})
    event = await system_event(client)
    assert event["event"] == "system.error", event
    assert event["metadata"]["error_code"] in ("SESSION_NOT_FOUND", "SCHEMA_VIOLATION")


@pytest.mark.parametrize("request_event", ["user.message", "user.cancel", "user.close_session", "user.ack",
                                           "user.response"])
async def test_other_connection_cannot_use_a_session(connect, request_event):
    a = await connect()
    session = await a.create_session()
    b = await connect()
    frame = {"event": request_event, "session_id": session.id}
    if request_event == "user.message":
        frame["content"] = "hijack"
    elif request_event == "user.ack":
        frame["content"] = {"last_seq": 1}
    elif request_event == "user.response":
        frame["step_id"] = "x"
        frame["content"] = {"confirmed": True}
    await b.send_frame(frame)
    err = await system_error(b, "SESSION_NOT_FOUND")
    # Existence is not revealed: same answer as for a session that never existed.
    await b.send_frame({**frame, "session_id": "s_never_existed"})
    ghost = await system_error(b, "SESSION_NOT_FOUND")
    assert ghost["content"] == err["content"]
    # The owner saw nothing and still has a working session.
    await no_more_events(session, 0.1)
    final, events = await session.ask("mine")
    assert "Turn 1." in final["content"]  # the hijack message never ran
    assert_seqs(session.history, session.id, 1)


async def test_turn_that_ends_while_detached_is_replayed_whole(connect):
    a = await connect()
    session = await a.create_session()
    await a.send_frame({"event": "user.message", "session_id": session.id, "content": "weather please"})
    await a.close()  # gone before reading any of the turn
    await asyncio.sleep(0.3)
    b = await connect()
    resumed_session, replayed = await b.reconnect(session.id, session.resume_token, 1)
    turn = replayed[:-1]
    assert replayed[-1]["event"] == "agent.session_resumed"
    assert replayed[-1]["metadata"]["turn_running"] is False
    assert_turn(turn, session.id)
    assert turn[0]["seq"] == 2
    assert turn[-1]["content"] == "The weather is Beijing: sunny, 25°C."
    final, _ = await resumed_session.ask("thanks")
    assert "Before that: weather please" in final["content"]


async def test_pending_confirmation_survives_a_reconnect(connect):
    a = await connect()
    session = await a.create_session()
    await a.send_frame({"event": "user.message", "session_id": session.id, "content": "danger"})
    confirm, _ = await wait_for_event(session, "agent.user_confirm", 5)
    await a.close()
    b = await connect()
    resumed_session, replayed = await b.reconnect(session.id, session.resume_token, session.last_seq)
    assert [e["event"] for e in replayed] == ["agent.session_resumed"]
    assert replayed[0]["metadata"]["turn_running"] is True
    await resumed_session.respond(confirm["step_id"], True)
    rest = [e async for e in resumed_session.until_terminal(5)]
    assert rest[-1]["content"] == "Outcome: dangerous thing done"
    assert_seqs(session.history + replayed + rest, session.id, 1)
