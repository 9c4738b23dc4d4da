"""Turns: start, queue, cancel and end, one at a time per session.

Real Turns + Placement + Relay + Recovery over fake sandboxes that confirm
opens; the test plays the sandbox (terminal events through the relay) and
reads what the client received from a fake connection.
"""

import asyncio

import orjson
import pytest

from myagent.protocol.errors import ErrorCode
from myagent.supervisor.replies import ClientError

from .fakes import FAILED, SILENT, Core, FakeConnection, FakeStore, answer, pipe, run_until, spin


async def setup(**options):
    core = Core(**options)
    sandbox = core.add_sandbox()
    conn = FakeConnection()
    session = await core.session(conn)
    return core, sandbox, conn, session


def turn_ops(sandbox):
    return pipe(sandbox).ops("turn")


# submit() ---------------------------------------------------------------------------------------
async def test_a_free_session_starts_the_turn_at_once():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "hello", "m1", "enqueue")
    turn = session.turn
    assert turn is not None and turn.text == "hello" and turn.message_id == "m1"
    assert turn_ops(sandbox) == [{"op": "turn", "sid": session.id, "turn": turn.id, "text": "hello"}]
    assert conn.received == []  # nothing to say: its events will come from the sandbox
    assert core.metrics.turns_started == 1 and session.turns == 1 and sandbox.turns == 1


async def test_the_users_message_is_history_from_the_moment_the_turn_starts():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "what is 2+2?", None, "enqueue")
    assert [orjson.loads(m) for m in session.history] == [{"role": "user", "content": "what is 2+2?"}]
    assert session.turn.history_mark == 0


async def test_a_message_during_a_turn_is_queued_with_its_position_and_turn_id():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "first", None, "enqueue")
    core.turns.submit(session, "second", "m2", "enqueue")
    core.turns.submit(session, "third", None, "enqueue")
    queued = conn.events("agent.message_queued")
    assert [q["metadata"]["position"] for q in queued] == [1, 2]
    assert queued[0]["metadata"]["message_id"] == "m2" and "message_id" not in queued[1]["metadata"]
    assert [q["metadata"]["multitask"] for q in queued] == ["enqueue", "enqueue"]
    assert [q["metadata"]["turn_id"] for q in queued] == [t.id for t in session.inbox]
    assert len(turn_ops(sandbox)) == 1  # only the first runs


async def test_reject_refuses_a_message_while_a_turn_runs():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "first", None, "enqueue")
    with pytest.raises(ClientError) as refused:
        core.turns.submit(session, "second", None, "reject")
    assert refused.value.code is ErrorCode.SESSION_BUSY
    assert not session.inbox and conn.received == []


async def test_reject_still_queues_while_the_session_is_being_placed():
    """A message is never refused because its session is being restored or moved."""
    core, sandbox, conn, session = await setup()
    target = core.add_sandbox(answer=SILENT)
    move = asyncio.ensure_future(core.placement.move(session))
    await run_until(lambda: session.placing)
    core.turns.submit(session, "while moving", None, "reject")
    assert [t.text for t in session.inbox] == ["while moving"]
    assert conn.names() == ["agent.message_queued"]
    core.placement.on_control(target, answer(target, session.id))
    assert await move is True


async def test_the_queue_is_bounded():
    core, sandbox, conn, session = await setup(max_queued_messages=2)
    core.turns.submit(session, "running", None, "enqueue")
    core.turns.submit(session, "q1", None, "enqueue")
    core.turns.submit(session, "q2", None, "enqueue")
    for mode in ("enqueue", "interrupt", "rollback"):
        with pytest.raises(ClientError) as refused:
            core.turns.submit(session, "one too many", None, mode)
        assert refused.value.code is ErrorCode.SESSION_BUSY
    assert [t.text for t in session.inbox] == ["q1", "q2"]
    assert pipe(sandbox).ops("cancel") == []


@pytest.mark.parametrize("mode", ["interrupt", "rollback"])
async def test_interrupt_and_rollback_go_first_and_send_one_cancel(mode):
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "running", None, "enqueue")
    running = session.turn
    core.turns.submit(session, "queued", None, "enqueue")
    core.turns.submit(session, "urgent", None, mode)
    core.turns.submit(session, "urgent again", None, "interrupt")
    # Interrupting messages run in the order they were sent, ahead of the others.
    assert [t.text for t in session.inbox] == ["urgent", "urgent again", "queued"]
    assert [e["metadata"]["position"] for e in conn.events("agent.message_queued")] == [1, 1, 2]
    assert pipe(sandbox).ops("cancel") == [
        {"op": "cancel", "sid": session.id, "turn": running.id, "reason": "CANCELLED"}]
    assert running.rollback is (mode == "rollback")
    assert session.turn is running  # the sandbox's terminal event ends it, not the front


# finish() and what comes next -----------------------------------------------------------------------
async def test_the_terminal_event_ends_the_turn_and_starts_the_next_queued_message():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "first", None, "enqueue")
    core.turns.submit(session, "second", "m2", "enqueue")
    queued_id = conn.events("agent.message_queued")[0]["metadata"]["turn_id"]
    first = core.finish(sandbox, session)
    assert session.turn.id == queued_id and session.turn.text == "second"
    assert [op["turn"] for op in turn_ops(sandbox)] == [first, queued_id]
    assert first in session.ended_turns
    assert core.metrics.turns_ended["agent.final_answer"] == 1


async def test_finish_with_nothing_queued_reports_the_session_idle():
    core, sandbox, conn, session = await setup()
    idle = []
    core.turns.on_idle = idle.append
    core.turns.submit(session, "only", None, "enqueue")
    core.finish(sandbox, session)
    assert idle == [session] and session.turn is None and session.free


async def test_finish_is_idempotent():
    core, sandbox, conn, session = await setup()
    idle = []
    core.turns.on_idle = idle.append
    core.turns.submit(session, "only", None, "enqueue")
    core.turns.finish(session, "agent.final_answer", None)
    core.turns.finish(session, "agent.final_answer", None)
    assert idle == [session] and core.metrics.turns_ended["agent.final_answer"] == 1


async def test_a_message_for_an_unplaced_session_waits_and_asks_for_placement():
    core, sandbox, conn, session = await setup()
    unplaced = []
    core.turns.on_unplaced = unplaced.append
    core.placement.unhost(session)
    core.turns.submit(session, "hello", None, "enqueue")
    assert unplaced == [session] and [t.text for t in session.inbox] == ["hello"]
    assert turn_ops(sandbox) == []


async def test_reaching_the_turn_limit_retires_the_sandbox():
    core, sandbox, conn, session = await setup()
    sandbox.turn_limit = 2
    core.turns.submit(session, "one", None, "enqueue")
    core.finish(sandbox, session)
    assert core.pool.retired == []
    core.turns.submit(session, "two", None, "enqueue")
    assert core.pool.retired == [sandbox.id]
    assert turn_ops(sandbox)[-1]["text"] == "two"  # the turn itself still runs there


# rollback -------------------------------------------------------------------------------------------
async def test_rollback_drops_the_turns_history_and_re_opens_before_the_next_message():
    core, sandbox, conn, session = await setup()
    session.add_history('{"role":"user","content":"before"}')
    core.turns.submit(session, "doomed", None, "enqueue")
    doomed = session.turn.id
    core.message(sandbox, session, {"role": "assistant", "content": "half"})
    core.turns.submit(session, "instead", None, "rollback")
    core.event(sandbox, session, "agent.interrupted", "cancelled", reason="CANCELLED")
    await run_until(lambda: session.turn is not None)
    # Re-opened on the same sandbox with the history before the rolled-back turn.
    assert [h for _, h in pipe(sandbox).opens()][-1] == [{"role": "user", "content": "before"}]
    assert session.sandbox is sandbox and pipe(sandbox).ops("close") == []
    notice = conn.events("system.notice")[-1]["metadata"]
    assert notice["rolled_back_turn_id"] == doomed and notice["messages_dropped"] == 2
    assert conn.names()[-2:] == ["agent.interrupted", "system.notice"]
    assert session.turn.text == "instead"
    assert [orjson.loads(m) for m in session.history] == [{"role": "user", "content": "before"},
                                                          {"role": "user", "content": "instead"}]


async def test_a_failed_rollback_re_open_unhosts_and_asks_for_placement():
    core, sandbox, conn, session = await setup()
    unplaced = []
    core.turns.on_unplaced = unplaced.append
    core.turns.submit(session, "doomed", None, "enqueue")
    core.turns.submit(session, "instead", None, "rollback")
    pipe(sandbox).answer = FAILED
    core.event(sandbox, session, "agent.interrupted", "cancelled", reason="CANCELLED")
    await run_until(lambda: unplaced)
    assert unplaced == [session] and session.sandbox is None
    assert pipe(sandbox).ops("close") == [{"op": "close", "sid": session.id}]
    assert [t.text for t in session.inbox] == ["instead"] and session.turn is None


# abort() ----------------------------------------------------------------------------------------------
async def test_abort_delivers_exactly_one_interrupted():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "hello", None, "enqueue")
    tid = session.turn.id
    core.turns.abort(session, ErrorCode.SESSION_CLOSED)
    core.turns.abort(session, ErrorCode.SESSION_CLOSED)
    # The sandbox's own terminal event for that turn comes late: dropped quietly.
    core.event(sandbox, session, "agent.interrupted", "cancelled", turn_id=tid, reason="CANCELLED")
    interrupted = conn.events("agent.interrupted")
    assert len(interrupted) == 1
    meta = interrupted[0]["metadata"]
    assert meta["turn_id"] == tid and meta["reason"] == "SESSION_CLOSED" and meta["error_code"] == "SESSION_CLOSED"
    assert interrupted[0]["content"] == "The session was closed."
    assert session.turn is None and sandbox.offences == 0
    assert core.metrics.interrupted["SESSION_CLOSED"] == 1


async def test_abort_without_a_turn_says_nothing():
    core, sandbox, conn, session = await setup()
    core.turns.abort(session, ErrorCode.SANDBOX_CRASHED)
    assert conn.received == []


# cancel() and timeout() ---------------------------------------------------------------------------------
async def test_cancel_without_a_turn_is_false():
    core, sandbox, conn, session = await setup()
    assert core.turns.cancel(session, ErrorCode.CANCELLED) is False
    assert pipe(sandbox).ops("cancel") == []


async def test_timeout_cancels_with_turn_timeout_and_ignores_stale_turns():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "slow", None, "enqueue")
    tid = session.turn.id
    core.turns.timeout(session, "t_some_older_turn")
    assert pipe(sandbox).ops("cancel") == []
    core.turns.timeout(session, tid)
    assert pipe(sandbox).ops("cancel") == [{"op": "cancel", "sid": session.id, "turn": tid, "reason": "TURN_TIMEOUT"}]
    assert core.turns.cancel(session, ErrorCode.CANCELLED) is True
    assert len(pipe(sandbox).ops("cancel")) == 1  # one cancel per turn


async def test_the_turn_timer_fires_from_the_config_and_finish_disarms_it():
    core, sandbox, conn, session = await setup(turn_timeout=0.001)
    core.turns.submit(session, "slow", None, "enqueue")
    tid = session.turn.id
    await run_until(lambda: pipe(sandbox).ops("cancel"), iterations=10_000)
    assert pipe(sandbox).ops("cancel")[0]["reason"] == "TURN_TIMEOUT" and pipe(sandbox).ops("cancel")[0]["turn"] == tid
    core.turns.submit(session, "next", None, "enqueue")
    core.event(sandbox, session, "agent.interrupted", "timed out", reason="TURN_TIMEOUT")
    timer = session.turn.timer
    core.finish(sandbox, session)
    assert timer.cancelled()


async def test_the_turn_timer_is_armed_for_the_configured_time():
    core, sandbox, conn, session = await setup(turn_timeout=300)
    core.turns.submit(session, "slow", None, "enqueue")
    remaining = session.turn.timer.when() - asyncio.get_running_loop().time()
    assert 299 < remaining <= 300


async def test_a_cancel_for_an_unhosted_turn_sends_nothing():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "hello", None, "enqueue")
    core.placement.unhost(session)
    assert core.turns.cancel(session, ErrorCode.CANCELLED) is True
    assert pipe(sandbox).ops("cancel") == [] and session.turn.cancelling is None


# drop_queue() -------------------------------------------------------------------------------------------
async def test_drop_queue_answers_each_queued_message_with_an_error():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "running", None, "enqueue")
    core.turns.submit(session, "q1", "m1", "enqueue")
    core.turns.submit(session, "q2", None, "enqueue")
    ids = [t.id for t in session.inbox]
    conn.clear()
    core.turns.drop_queue(session, ErrorCode.AGENT_UNAVAILABLE, "The agent is unavailable.")
    errors = conn.events("agent.error")
    assert [e["metadata"]["turn_id"] for e in errors] == ids
    assert errors[0]["metadata"]["message_id"] == "m1" and "message_id" not in errors[1]["metadata"]
    assert all(e["metadata"]["error_code"] == "AGENT_UNAVAILABLE" and e["content"] == "The agent is unavailable."
               for e in errors)
    assert not session.inbox and session.turn is not None  # the running turn is not the queue's


async def test_a_quarantined_session_runs_no_more_turns():
    core, sandbox, conn, session = await setup()
    session.quarantined = True
    with pytest.raises(ClientError) as refused:
        core.turns.submit(session, "again", None, "enqueue")
    assert refused.value.code is ErrorCode.SESSION_QUARANTINED and turn_ops(sandbox) == []


async def test_closing_a_session_with_a_rollback_pending_says_nothing_after_session_end():
    store = FakeStore()
    core = Core(store=store)
    core.add_sandbox()
    conn = FakeConnection()
    session = await core.session(conn)
    core.turns.submit(session, "doomed", None, "enqueue")
    core.turns.submit(session, "instead", None, "rollback")
    core.router.end_session(session, "closed by the client")
    deleted_at = len(store.calls)
    await spin(20)
    assert conn.names()[-1] == "agent.session_end"
    assert ("delete", session.id) in store.calls and store.calls[deleted_at:] == []
