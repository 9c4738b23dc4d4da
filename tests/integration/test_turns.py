"""Turns end to end: event stream invariants, memory, cancel, confirmation, close."""

from __future__ import annotations

import asyncio

import pytest

from myagent.client import ClientError

from .helpers import (
    assert_seqs,
    assert_turn,
    expect_error,
    no_more_events,
    wait_for_event,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_full_turn_with_tool(connect):
    client = await connect()
    session = await client.create_session()
    final, events = await session.ask("What is the weather in Beijing?")
    turn_id = assert_turn(events, session.id)
    names = [e["event"] for e in events]
    assert names[0] == "agent.thinking"
    assert "agent.tool_call" in names and "agent.tool_result" in names
    assert names.index("agent.tool_call") < names.index("agent.tool_result") < names.index("agent.final_answer")
    assert names.count("agent.partial_answer") >= 2  # streamed in deltas (chunk_size 4)

    call = next(e for e in events if e["event"] == "agent.tool_call")
    result = next(e for e in events if e["event"] == "agent.tool_result")
    assert call["step_id"] and call["step_id"] == result["step_id"]
    assert call["content"] == "Calling tool: get_weather"
    assert call["metadata"]["tool"] == "get_weather"
    assert call["metadata"]["args"] == {"city": "Beijing"}
    assert call["metadata"]["status"] == "running"
    assert result["metadata"]["tool"] == "get_weather"
    assert result["metadata"]["status"] == "success"
    assert result["content"] == "Beijing: sunny, 25°C"
    assert final["content"] == "The weather is Beijing: sunny, 25°C."
    for event in events:
        assert event["metadata"]["turn_id"] == turn_id
        assert event["metadata"]["connection_id"] == client.connection_id
    # seq is gapless for the whole session, session_created included.
    assert_seqs(session.history, session.id, 1)
    assert session.history[0]["event"] == "agent.session_created"
    assert events[0]["seq"] == 2

    # A second turn continues the numbering and gets a new turn_id.
    _, events2 = await session.ask("long")
    turn2 = assert_turn(events2, session.id)
    assert turn2 != turn_id
    assert events2[0]["seq"] == events[-1]["seq"] + 1
    assert_seqs(session.history, session.id, 1)
    await no_more_events(session, 0.2)


async def test_memory_across_turns(connect):
    client = await connect()
    session = await client.create_session()
    first, _ = await session.ask("my favourite colour is teal")
    assert first["content"].startswith("You said: my favourite colour is teal.")
    assert "Turn 1" in first["content"]
    second, events = await session.ask("what did I say?")
    assert_turn(events, session.id)
    assert "Before that: my favourite colour is teal" in second["content"], second["content"]
    assert "Turn 2" in second["content"]
    # Another session has its own memory.
    other = await client.create_session()
    fresh, _ = await other.ask("hi")
    assert "teal" not in fresh["content"]
    assert "Turn 1" in fresh["content"]


async def test_failing_tool_is_a_tool_error_and_the_turn_goes_on(connect):
    client = await connect()
    session = await client.create_session()
    final, events = await session.ask("please fail")
    assert_turn(events, session.id)
    result = next(e for e in events if e["event"] == "agent.tool_result")
    assert result["metadata"]["status"] == "failed"
    assert "tool exploded" in result["metadata"]["error"]
    assert "Traceback" not in result["content"]
    assert "tool exploded" in final["content"]
    again, _ = await session.ask("hello")
    assert again["event"] == "agent.final_answer"


async def test_cancel_mid_tool(connect):
    client = await connect()
    session = await client.create_session()
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "slow please"})
    call, before = await wait_for_event(session, "agent.tool_call", 5)
    assert call["metadata"]["tool"] == "slow"
    await session.cancel()
    rest = [e async for e in session.until_terminal(5)]
    events = before + rest
    assert_turn(events, session.id, terminal="agent.interrupted")
    interrupted = [e for e in events if e["event"] == "agent.interrupted"]
    assert len(interrupted) == 1
    assert interrupted[0]["metadata"]["reason"] == "CANCELLED"
    assert not any(e["event"] in ("agent.final_answer", "agent.error") for e in events)
    # Nothing of the cancelled turn arrives later (the tool would have finished after 3 s).
    await no_more_events(session, 0.5)
    final, after = await session.ask("hello again")
    assert_turn(after, session.id)
    assert "hello again" in final["content"]
    assert_seqs(session.history, session.id, 1)


async def test_cancel_without_a_turn_is_no_active_turn(connect):
    client = await connect()
    session = await client.create_session()
    await session.cancel()
    await expect_error(session, "NO_ACTIVE_TURN")
    await session.ask("hi")
    await session.cancel()
    await expect_error(session, "NO_ACTIVE_TURN")
    final, _ = await session.ask("still here")
    assert final["event"] == "agent.final_answer"


async def _confirmation(session) -> tuple[dict, list[dict]]:
    await session.client.send_frame({"event": "user.message", "session_id": session.id,
                                     "content": "do the danger thing"})
    return await wait_for_event(session, "agent.user_confirm", 5)


@pytest.mark.parametrize("spelling", ["confirmed", "approved"])
async def test_confirmation_approved(connect, spelling):
    client = await connect()
    session = await client.create_session()
    confirm, before = await _confirmation(session)
    assert confirm["step_id"]
    assert confirm["metadata"]["tool_name"] == "dangerous"
    assert confirm["metadata"]["tool_args"] == {}
    assert confirm["metadata"]["tool_description"] == "Does something the user must approve."
    # The tool does not run before the answer.
    await no_more_events(session, 0.3)
    await client.send_frame({"event": "user.response", "session_id": session.id, "step_id": confirm["step_id"],
                             "content": {spelling: True}})
    rest = [e async for e in session.until_terminal(5)]
    events = before + rest
    assert_turn(events, session.id)
    result = next(e for e in events if e["event"] == "agent.tool_result")
    assert result["step_id"] == confirm["step_id"]
    assert result["metadata"]["status"] == "success"
    assert result["content"] == "dangerous thing done"
    assert events[-1]["content"] == "Outcome: dangerous thing done"


async def test_confirmation_denied(connect):
    client = await connect()
    session = await client.create_session()
    confirm, before = await _confirmation(session)
    await session.respond(confirm["step_id"], False)
    rest = [e async for e in session.until_terminal(5)]
    events = before + rest
    assert_turn(events, session.id)
    result = next(e for e in events if e["event"] == "agent.tool_result")
    assert result["step_id"] == confirm["step_id"]
    assert result["metadata"]["status"] == "failed"
    assert result["metadata"]["error"]
    assert "dangerous thing done" not in result["content"]
    assert "dangerous thing done" not in events[-1]["content"]
    # The step is answered: answering it again is STEP_NOT_FOUND.
    await session.respond(confirm["step_id"], True)
    await expect_error(session, "STEP_NOT_FOUND")


async def test_response_with_bogus_step_is_step_not_found(connect):
    client = await connect()
    session = await client.create_session()
    # Nothing waiting at all.
    await session.respond("no-such-step", True)
    err = await expect_error(session, "STEP_NOT_FOUND")
    assert err["metadata"]["field"] == "step_id"
    # A confirmation waits, but for another step: it keeps waiting.
    confirm, _ = await _confirmation(session)
    await session.respond(confirm["step_id"] + "-bogus", True)
    await expect_error(session, "STEP_NOT_FOUND")
    await session.respond(confirm["step_id"], True)
    rest = [e async for e in session.until_terminal(5)]
    assert rest[-1]["content"] == "Outcome: dangerous thing done"


async def test_close_session(connect):
    client = await connect()
    session = await client.create_session()
    await session.ask("hello")
    end = await session.close()
    assert end["event"] == "agent.session_end"
    assert end["session_id"] == session.id
    assert_seqs(session.history, session.id, 1)
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "hello?"})
    await expect_error(session, "SESSION_NOT_FOUND")
    await session.cancel()
    await expect_error(session, "SESSION_NOT_FOUND")
    await client.send_frame({"event": "user.close_session", "session_id": session.id})
    await expect_error(session, "SESSION_NOT_FOUND")
    # Its resume token does not bring it back either.
    await client.send_frame({"event": "user.reconnect", "session_id": session.id,
                             "content": {"resume_token": session.resume_token, "last_seq": 0}})
    await expect_error(session, "SESSION_NOT_FOUND")
    # The connection is fine.
    other = await client.create_session()
    final, _ = await other.ask("hi")
    assert final["event"] == "agent.final_answer"


async def test_close_session_during_a_turn(connect):
    client = await connect()
    session = await client.create_session()
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "slow"})
    await wait_for_event(session, "agent.tool_call", 5)
    end = await session.close()
    names = [e["event"] for e in session.history]
    assert names.count("agent.interrupted") == 1
    assert names[-1] == "agent.session_end" and end is session.history[-1]
    assert names[-2] == "agent.interrupted"
    assert_seqs(session.history, session.id, 1)
    await no_more_events(session, 0.3)


async def test_client_library_gets_schema_errors_on_the_session(connect):
    """A refused user.message names its session, so AgentClient raises instead of hanging."""
    client = await connect()
    session = await client.create_session()
    with pytest.raises(ClientError) as info:
        await session.ask("", timeout=5)
    assert info.value.code == "SCHEMA_VIOLATION"
    assert info.value.event["metadata"]["field"] == "content"
    final, _ = await session.ask("fine now", timeout=5)
    assert final["event"] == "agent.final_answer"


async def test_cancel_while_waiting_for_confirmation(connect):
    client = await connect()
    session = await client.create_session()
    confirm, before = await _confirmation(session)
    await session.cancel()
    rest = [e async for e in session.until_terminal(5)]
    assert_turn(before + rest, session.id, terminal="agent.interrupted")
    assert rest[-1]["metadata"]["reason"] == "CANCELLED"
    assert not any(e["event"] == "agent.tool_result" and e["metadata"]["status"] == "success" for e in rest)
    # The confirmation died with the turn.
    await session.respond(confirm["step_id"], True)
    await expect_error(session, "STEP_NOT_FOUND")
    await no_more_events(session, 0.3)
    final, _ = await session.ask("after the cancel")
    assert final["event"] == "agent.final_answer"


async def test_repeated_message_id_runs_once(connect):
    client = await connect()
    session = await client.create_session()
    events = [e async for e in session.send("first", message_id="m-1", timeout=5)]
    assert events[-1]["event"] == "agent.final_answer"
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "first",
                             "metadata": {"message_id": "m-1"}})
    notice = await session.next_event(5)
    assert notice["event"] == "system.notice", notice
    assert notice["metadata"]["duplicate"] is True
    assert notice["metadata"]["message_id"] == "m-1"
    await no_more_events(session, 0.3)
    final, _ = await session.ask("second")
    assert "Turn 2." in final["content"], final["content"]
    assert_seqs(session.history, session.id, 1)


async def test_client_close_of_an_unknown_session_raises_at_once(connect):
    client = await connect()
    session = await client.create_session()
    await session.close()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ClientError) as info:
        await session.close(timeout=5)
    assert info.value.code == "SESSION_NOT_FOUND"
    assert loop.time() - started < 2
