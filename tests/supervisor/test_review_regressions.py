"""Regressions for what a review of the front core found (one test per finding, named after it)."""

import asyncio

import pytest

from myagent.protocol.errors import ErrorCode
from myagent.supervisor.placement import PlacementError
from myagent.supervisor.sandboxes import DRAINING

from .fakes import SILENT, Core, FakeStore, answer, pipe, run_until, spin
from .test_recovery import setup


async def test_a_move_scheduled_before_a_turn_started_leaves_the_running_session_alone():
    core, a, conn, session = await setup()
    b = core.add_sandbox()
    a.state = DRAINING
    core.recovery.idle(session)  # schedules the move off a ...
    core.turns.submit(session, "hello", None, "enqueue")  # ... but a message starts a turn first
    await spin(20)
    assert session.sandbox is a and session.turn is not None and pipe(b).opens() == []
    core.finish(a, session)  # its end moves it
    await run_until(lambda: session.sandbox is b)


async def test_a_session_closed_while_its_restore_waits_gets_nothing_after_session_end():
    store = FakeStore()
    core, a, conn, session = await setup(store=store)
    b = core.add_sandbox(answer=SILENT)
    core.pool.lose(a)
    await run_until(lambda: session.placing)
    core.router.end_session(session, "closed by the client")
    deleted = len(store.calls)
    core.placement.on_control(b, answer(b, session.id))
    await spin(30)
    assert conn.names()[-1] == "agent.session_end"
    assert store.calls[deleted - 1][0] == "delete" and len(store.calls) == deleted


async def test_a_message_queued_while_the_session_is_placed_runs_once_it_is_free():
    core, a, conn, session = await setup()
    session.placing = True  # a concurrent reconnect revives it, say
    core.turns.submit(session, "first", None, "enqueue")
    assert conn.names() == ["agent.message_queued"]
    session.placing = False  # placed, by a path that does not run the queue itself
    core.turns.submit(session, "second", None, "enqueue")
    assert [op["text"] for op in pipe(a).ops("turn")] == ["first"]
    assert [t.text for t in session.inbox] == ["second"]


async def test_a_sandbox_cannot_fill_the_front_with_pending_confirmations():
    core, a, conn, session = await setup()
    core.turns.submit(session, "hello", None, "enqueue")
    for i in range(200):
        core.event(a, session, "agent.user_confirm", "ok?", step_id=f"step-{i}", tool_name="t", tool_args={},
                   tool_description="")
    assert len(session.turn.pending_steps) == 64
    core.event(a, session, "agent.user_confirm", "ok?", step_id="x" * 500, tool_name="t", tool_args={},
               tool_description="")
    assert a.offences == 1


async def test_cancelling_a_waiting_open_is_not_swallowed():
    core = Core()
    a = core.add_sandbox(answer=SILENT)
    session, _ = core.registry.create("alice")
    task = asyncio.ensure_future(core.placement.host(session))
    await run_until(lambda: a.opening)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pipe(a).ops("close") == [{"op": "close", "sid": session.id}] and session.sandbox is None


async def test_forgetting_a_session_another_node_took_writes_nothing_to_the_shared_store():
    store = FakeStore(shared=True)
    core, a, conn, session = await setup(store=store)
    core.turns.submit(session, "hello", None, "enqueue")
    before = len(store.calls)
    core.recovery.forget(session)
    assert store.calls[before:] == []


async def test_a_rollback_that_crossed_the_final_answer_keeps_the_completed_turn():
    core, a, conn, session = await setup()
    core.turns.submit(session, "first", None, "enqueue")
    core.turns.submit(session, "second", None, "rollback")
    core.finish(a, session, "answer 1")  # it completed before the cancel reached the sandbox
    await spin(10)
    assert not conn.events("system.notice")
    assert '"first"' in session.history[0] and session.turn is not None and session.turn.text == "second"


async def test_a_turn_whose_sandbox_ignores_the_cancel_ends_after_the_grace():
    core, a, conn, session = await setup(cancel_grace=0.01)
    core.add_sandbox()  # where it is re-opened
    core.turns.submit(session, "hello", None, "enqueue")
    tid = session.turn.id
    core.turns.cancel(session, ErrorCode.CANCELLED)
    await asyncio.sleep(0.05)
    await run_until(lambda: session.sandbox is not None)
    interrupted = conn.events("agent.interrupted")
    assert len(interrupted) == 1 and interrupted[0]["metadata"]["turn_id"] == tid
    assert session.turn is None and pipe(a).ops("close") and session.sandbox is not None


async def test_no_session_is_placed_on_a_sandbox_being_killed():
    core = Core()
    a, b = core.add_sandbox(), core.add_sandbox()
    a.kill_reason = "MEMORY_LIMIT"
    assert core.placement.choose() is b
    b.kill_reason = "SHUTTING_DOWN"
    assert core.placement.choose() is None and core.placement.free_slots == 0
    session, _ = core.registry.create("alice")
    with pytest.raises(PlacementError):
        await core.placement.host(session)
