"""Double texting: a message sent while a turn runs, under each multitask mode, and while restoring.

The scripted model answers "You said: X. Before that: Y." where Y is the previous
user message in the session's history, so each test can tell which messages the
history kept.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from myagent.client import AgentClient
from tests.serverproc import AGENTS, ServerProcess

from .conftest import SCRIPTED_LLM
from .helpers import assert_seqs, assert_turn, expect_error, wait_for_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]


@pytest.fixture(scope="module")
def server_args() -> tuple[str, ...]:
    return ("--workers", "2", "--max-queued-messages", "2")


async def send(session, text: str, mode: str | None = None) -> None:
    frame = {"event": "user.message", "session_id": session.id, "content": text}
    if mode:
        frame["metadata"] = {"multitask": mode}
    await session.client.send_frame(frame)


async def turn_events(session, turn_id: str, timeout: float = 10.0) -> list[dict]:
    """Events of turn ``turn_id`` through its terminal event (other events are not expected)."""
    events = []
    while True:
        event = await session.next_event(timeout)
        if event["event"] == "system.notice":
            continue
        assert event["metadata"].get("turn_id") == turn_id, event
        events.append(event)
        if event["event"] in ("agent.final_answer", "agent.error", "agent.interrupted"):
            return events


async def start_slow(session) -> str:
    await send(session, "slow")
    call, _ = await wait_for_event(session, "agent.tool_call", 5)
    return call["metadata"]["turn_id"]


async def test_enqueue_is_the_default_and_runs_after_the_running_turn(connect):
    client = await connect()
    session = await client.create_session()
    slow = await start_slow(session)
    await send(session, "hello")
    queued, _ = await wait_for_event(session, "agent.message_queued", 5)
    assert queued["metadata"]["position"] == 1 and queued["metadata"]["multitask"] == "enqueue"
    second = queued["metadata"]["turn_id"]
    assert second != slow
    rest = await turn_events(session, slow)
    assert rest[-1]["event"] == "agent.final_answer"
    events = await turn_events(session, second)
    assert events[-1]["content"].startswith("You said: hello. Before that: slow."), events[-1]
    assert_turn(events, session.id)
    assert_seqs([e for e in session.history if "seq" in e], session.id, 1)


async def test_reject_answers_session_busy_and_keeps_the_running_turn(connect):
    client = await connect()
    session = await client.create_session()
    slow = await start_slow(session)
    await send(session, "hello", "reject")
    err = await expect_error(session, "SESSION_BUSY")
    assert err["metadata"]["recoverable"] is True and err["metadata"]["session_id"] == session.id
    rest = await turn_events(session, slow)
    assert rest[-1]["event"] == "agent.final_answer"
    final, _ = await session.ask("after")
    assert "Before that: slow." in final["content"]  # the refused message never reached the history


async def test_interrupt_cancels_the_running_turn_keeps_its_work_and_runs_the_message(connect):
    client = await connect()
    session = await client.create_session()
    slow = await start_slow(session)
    await send(session, "hello", "interrupt")
    queued, _ = await wait_for_event(session, "agent.message_queued", 5)
    rest = await turn_events(session, slow)
    assert rest[-1]["event"] == "agent.interrupted"
    assert rest[-1]["metadata"]["error_code"] == "CANCELLED"
    events = await turn_events(session, queued["metadata"]["turn_id"])
    assert events[-1]["content"].startswith("You said: hello. Before that: slow."), events[-1]


async def test_rollback_cancels_the_running_turn_and_drops_it_from_the_history(connect):
    client = await connect()
    session = await client.create_session()
    await session.ask("first")
    slow = await start_slow(session)
    await send(session, "hello", "rollback")
    queued, _ = await wait_for_event(session, "agent.message_queued", 5)
    rest = await turn_events(session, slow)
    assert rest[-1]["event"] == "agent.interrupted"
    notice, _ = await wait_for_event(session, "system.notice", 5)
    assert notice["metadata"]["rolled_back_turn_id"] == slow and notice["metadata"]["messages_dropped"] >= 1
    events = await turn_events(session, queued["metadata"]["turn_id"])
    # The history went back to before "slow": the agent never saw it.
    assert events[-1]["content"].startswith("You said: hello. Before that: first."), events[-1]
    final, _ = await session.ask("again")
    assert "Before that: hello." in final["content"]


async def test_the_queue_is_bounded_and_runs_in_order(connect):
    client = await connect()
    session = await client.create_session()
    slow = await start_slow(session)
    for text in ("one", "two"):
        await send(session, text)
    firsts = [(await wait_for_event(session, "agent.message_queued", 5))[0] for _ in range(2)]
    assert [q["metadata"]["position"] for q in firsts] == [1, 2]
    await send(session, "three")
    err = await expect_error(session, "SESSION_BUSY")
    assert "2 messages" in err["content"]
    await turn_events(session, slow)
    one = await turn_events(session, firsts[0]["metadata"]["turn_id"])
    two = await turn_events(session, firsts[1]["metadata"]["turn_id"])
    assert one[-1]["content"].startswith("You said: one. Before that: slow.")
    assert two[-1]["content"].startswith("You said: two. Before that: one.")


async def test_messages_during_a_restore_wait_and_run_without_an_error():
    """Opening a session takes 1 s in this agent: the restore after a kill -9 is a wide window."""
    srv = ServerProcess(AGENTS / "slow_open_agent.py", "--workers", "1", llm=SCRIPTED_LLM,
                        env={"MYAGENT_OPEN_DELAY": "1"}).start(timeout=20)
    client = await AgentClient.connect(srv.url)
    try:
        session = await client.create_session()
        await session.ask("before the crash")
        [sandbox] = srv.status()["sandboxes"]
        os.kill(sandbox["pid"], signal.SIGKILL)
        while srv.status()["restarts"]["total"] < 1:  # the front has seen it go: the restore is under way
            await asyncio.sleep(0.01)
        await send(session, "during the restore")
        await send(session, "and another")
        seen = []
        while sum(e["event"] == "agent.final_answer" for e in seen) < 2:
            event = await session.next_event(15)
            assert event["event"] != "system.error", event
            seen.append(event)
        names = [e["event"] for e in seen]
        assert names[:3] == ["agent.message_queued", "agent.message_queued", "system.notice"], names
        finals = [e["content"] for e in seen if e["event"] == "agent.final_answer"]
        assert finals[0].startswith("You said: during the restore. Before that: before the crash.")
        assert finals[1].startswith("You said: and another. Before that: during the restore.")
    finally:
        await client.close()
        srv.stop()


async def test_a_rollback_reaches_the_durable_store(start_server, tmp_path):
    """The rolled-back turn is gone from the SQLite store too: after a restart the revived session's
    history goes straight from "first" to "hello"."""
    store = ("--workers", "1", "--store", f"sqlite://{tmp_path}/sessions.db")
    srv = start_server(*store)
    client = await AgentClient.connect(srv.url)
    session = await client.create_session()
    await session.ask("first")
    slow = await start_slow(session)
    await send(session, "hello", "rollback")
    queued, _ = await wait_for_event(session, "agent.message_queued", 5)
    await turn_events(session, slow)
    events = await turn_events(session, queued["metadata"]["turn_id"])
    assert events[-1]["content"].startswith("You said: hello. Before that: first.")
    sid, token, last = session.id, session.resume_token, session.last_seq
    await client.close()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0
    again = start_server(*store)
    client = await AgentClient.connect(again.url)
    try:
        revived, _ = await client.reconnect(sid, token, last)
        final, _ = await revived.ask("after the restart")
        assert final["content"].startswith("You said: after the restart. Before that: hello. Turn 3."), final
    finally:
        await client.close()
