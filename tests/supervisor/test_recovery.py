"""Recovery: sandbox loss, restores, recycling moves, leases.

Real Recovery + Placement + Turns over a FakePool of fake sandboxes; losses
are reported the way SandboxPool._lost reports them (``FakePool.lose``).
"""

import pytest

from myagent.protocol.errors import ErrorCode
from myagent.supervisor import recovery as recovery_module
from myagent.supervisor.replies import ClientError
from myagent.supervisor.sandboxes import DRAINING, READY, RETIRED, STARTING

from .fakes import FAILED, OPENED, SILENT, Core, FakeConnection, FakeStore, answer, pipe, run_until, spin


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    """Restores retry without waiting: the loop, not the clock, paces them."""
    monkeypatch.setattr(recovery_module, "RETRY_DELAY", 0)


async def setup(store=None, **options):
    core = Core(store=store, **options)
    a = core.add_sandbox()
    conn = FakeConnection()
    session = await core.session(conn)
    return core, a, conn, session


# Sandbox loss -------------------------------------------------------------------------------------
async def test_a_lost_sandbox_interrupts_running_turns_once_and_restores_with_history():
    core, a, conn, session = await setup()
    core.turns.submit(session, "hello", None, "enqueue")
    tid = session.turn.id
    core.message(a, session, {"role": "assistant", "content": "partial"})
    core.event(a, session, "agent.tool_call", "Calling tool: hog", step_id="c1", tool="hog", args={},
               status="running")
    b = core.add_sandbox()
    core.pool.lose(a, "MEMORY_LIMIT")
    assert core.pool.blamed == [True]  # its tool was running: a crash the turn explains
    await run_until(lambda: session.sandbox is b)
    assert conn.names() == ["agent.tool_call", "agent.interrupted", "system.notice"]
    _, interrupted, notice = conn.events()
    assert interrupted["metadata"]["turn_id"] == tid and interrupted["metadata"]["reason"] == "MEMORY_LIMIT"
    assert notice["metadata"] == {"restored": True, "reason": "MEMORY_LIMIT", "history_messages": 2,
                                  "connection_id": conn.id}
    assert pipe(b).opens() == [(session.id, [{"role": "user", "content": "hello"},
                                             {"role": "assistant", "content": "partial"}])]
    assert core.metrics.sessions_restored == 1 and not session.restoring and session.turn is None


async def test_a_loss_with_no_running_turn_is_not_blamed_and_interrupts_nothing():
    core, a, conn, session = await setup()
    core.add_sandbox()
    core.pool.lose(a, "SANDBOX_CRASHED")
    assert core.pool.blamed == [False]
    await run_until(lambda: session.sandbox is not None)
    assert conn.names() == ["system.notice"]


async def test_a_restore_under_way_when_the_server_drains_ends_quietly():
    """Draining: the restore's open ends (SHUTTING_DOWN) and it is not retried nor reported as
    AGENT_UNAVAILABLE; the session is revived from the store after the restart."""
    core, a, conn, session = await setup()
    b = core.add_sandbox(answer=SILENT)
    core.pool.lose(a, "SANDBOX_CRASHED")
    await run_until(lambda: b.opening)
    core.placement.stop_opening()
    await run_until(lambda: not session.restoring)
    assert session.sandbox is None and conn.names() == []
    assert len(pipe(b).opens()) == 1
    core.recovery.restore(session)  # and none starts again
    assert not session.restoring


@pytest.mark.parametrize("reason, code, blamed", [
    ("SANDBOX_CRASHED", "SANDBOX_CRASHED", True), ("WORKER_TIMEOUT", "WORKER_TIMEOUT", True),
    ("SANDBOX_MISBEHAVED", "SANDBOX_MISBEHAVED", True), ("SHUTTING_DOWN", "SHUTTING_DOWN", False),
    ("something odd", "SANDBOX_CRASHED", True)])
async def test_the_loss_reason_names_the_interruption(reason, code, blamed):
    core, a, conn, session = await setup()
    core.turns.submit(session, "hello", None, "enqueue")
    core.event(a, session, "agent.tool_call", "Calling tool: t", step_id="c1", tool="t", args={}, status="running")
    core.pool.lose(a, reason)
    assert core.pool.blamed == [blamed]
    assert [e["metadata"]["reason"] for e in conn.events("agent.interrupted")] == [code]


async def test_a_crash_outside_a_tool_is_not_blamed():
    """Only agent code (a tool, between tool_call and tool_result) is blamed: an operator's kill -9
    or an OOM kill while the model streams is the restart budget's business."""
    core, a, conn, session = await setup()
    core.turns.submit(session, "hello", None, "enqueue")
    core.event(a, session, "agent.tool_call", "Calling tool: t", step_id="c1", tool="t", args={}, status="running")
    core.event(a, session, "agent.tool_result", "ok", step_id="c1", tool="t", status="success")
    core.event(a, session, "agent.partial_answer", "stream")
    core.pool.lose(a, "SANDBOX_CRASHED")
    assert core.pool.blamed == [False] and not session.crashes


async def test_nothing_is_blamed_without_a_quarantine():
    core, a, conn, session = await setup(quarantine_after=0)
    core.turns.submit(session, "hello", None, "enqueue")
    core.event(a, session, "agent.tool_call", "Calling tool: t", step_id="c1", tool="t", args={}, status="running")
    core.pool.lose(a, "SANDBOX_CRASHED")
    assert core.pool.blamed == [False]


async def test_every_session_of_the_lost_sandbox_is_restored():
    core, a, conn, s1 = await setup()
    s2 = await core.session(conn)
    core.turns.submit(s1, "busy", None, "enqueue")
    b = core.add_sandbox()
    core.pool.lose(a)
    await run_until(lambda: s1.sandbox is b and s2.sandbox is b)
    assert len(conn.events("agent.interrupted")) == 1  # only s1 had a turn
    assert {sid for sid, _ in pipe(b).opens()} == {s1.id, s2.id}


async def test_a_rollback_pending_when_the_sandbox_dies_is_restored_without_the_turn():
    core, a, conn, session = await setup()
    session.add_history('{"role":"user","content":"before"}')
    core.turns.submit(session, "doomed", None, "enqueue")
    core.message(a, session, {"role": "assistant", "content": "half"})
    core.turns.submit(session, "instead", None, "rollback")
    b = core.add_sandbox()
    core.pool.lose(a)
    await run_until(lambda: session.turn is not None)
    assert pipe(b).opens() == [(session.id, [{"role": "user", "content": "before"}])]
    assert conn.names() == ["agent.message_queued", "agent.interrupted", "system.notice", "system.notice"]
    assert session.sandbox is b and pipe(b).ops("turn")[0]["text"] == "instead"


async def test_a_restore_waits_for_a_sandbox_and_retries_failed_opens():
    core, a, conn, session = await setup()
    b = core.add_sandbox(state=STARTING, answer=[FAILED, FAILED, OPENED])
    core.pool.lose(a)
    await spin(20)
    assert session.restoring and session.sandbox is None and pipe(b).raw == []  # nothing ready yet
    b.state = READY
    await run_until(lambda: session.sandbox is b)
    assert len(pipe(b).opens(session.id)) == 3 and not session.restoring
    assert pipe(b).ops("close", session.id) == [{"op": "close", "sid": session.id}] * 2  # after each failure
    assert conn.names() == ["system.notice"]


async def test_a_restore_gives_up_after_the_restore_timeout():
    core, a, conn, session = await setup(restore_timeout=0.005)
    core.turns.submit(session, "running", None, "enqueue")
    core.pool.lose(a)
    core.turns.submit(session, "q1", "m1", "enqueue")
    core.turns.submit(session, "q2", None, "enqueue")
    queued = [e["metadata"]["turn_id"] for e in conn.events("agent.message_queued")]
    await run_until(lambda: not session.restoring, iterations=100_000)
    error = conn.events("system.error")[-1]
    assert error["metadata"]["error_code"] == "AGENT_UNAVAILABLE" and error["session_id"] == session.id
    dropped = conn.events("agent.error")
    assert [e["metadata"]["turn_id"] for e in dropped] == queued
    assert all(e["metadata"]["error_code"] == "AGENT_UNAVAILABLE" for e in dropped)
    assert dropped[0]["metadata"]["message_id"] == "m1"
    assert not session.inbox and session.sandbox is None


async def test_a_restore_gives_up_at_once_when_the_agent_is_unavailable():
    core, a, conn, session = await setup()
    core.pool.unavailable_reason = "restart budget exhausted"
    core.pool.lose(a)
    await run_until(lambda: not session.restoring)
    assert conn.names() == ["system.error"]


async def test_messages_queued_during_a_restore_run_after_it():
    core, a, conn, session = await setup()
    core.turns.submit(session, "running", None, "enqueue")
    b = core.add_sandbox(answer=SILENT)
    core.pool.lose(a)
    await run_until(lambda: session.placing)
    core.turns.submit(session, "while restoring", None, "reject")  # never refused during a restore
    queued_id = conn.events("agent.message_queued")[0]["metadata"]["turn_id"]
    core.placement.on_control(b, answer(b, session.id))
    await run_until(lambda: session.turn is not None)
    assert conn.names() == ["agent.interrupted", "agent.message_queued", "system.notice"]
    assert pipe(b).ops("turn") == [{"op": "turn", "sid": session.id, "turn": queued_id, "text": "while restoring"}]


async def test_restore_is_a_no_op_while_one_is_under_way_or_the_session_is_hosted():
    core, a, conn, session = await setup()
    core.recovery.restore(session)
    assert not session.restoring  # hosted: nothing to do
    core.placement.unhost(session)
    core.recovery.restore(session)
    core.recovery.restore(session)
    await run_until(lambda: session.sandbox is a)
    assert len(pipe(a).opens(session.id)) == 2  # the first host and one restore
    assert conn.names() == ["system.notice"]


# Quarantine ------------------------------------------------------------------------------------------
async def test_a_session_whose_turns_keep_crashing_sandboxes_is_quarantined():
    core, a, conn, session = await setup(quarantine_after=2)
    for loss in range(2):
        core.turns.submit(session, f"crash {loss}", None, "enqueue")
        core.event(session.sandbox, session, "agent.tool_call", "Calling tool: crash", step_id=f"c{loss}",
                   tool="crash", args={}, status="running")
        if loss == 1:
            core.turns.submit(session, "queued", None, "enqueue")
        new = core.add_sandbox()
        core.pool.lose(session.sandbox, "SANDBOX_CRASHED")
        await run_until(lambda: session.sandbox is new)
    assert session.quarantined and core.metrics.sessions_quarantined == 1
    error = [e for e in conn.events("system.error") if e["metadata"]["error_code"] == "SESSION_QUARANTINED"]
    assert len(error) == 1
    assert [e["metadata"]["error_code"] for e in conn.events("agent.error")] == ["SESSION_QUARANTINED"]
    assert not session.inbox and session.turn is None
    with pytest.raises(ClientError) as refused:
        core.turns.submit(session, "again", None, "enqueue")
    assert refused.value.code is ErrorCode.SESSION_QUARANTINED


# Recycling: moving idle sessions off draining sandboxes -------------------------------------------------
async def test_an_idle_session_moves_off_a_draining_sandbox_which_is_then_stopped():
    core, a, conn, session = await setup()
    b = core.add_sandbox()
    a.turn_limit = 1
    core.turns.submit(session, "last turn here", None, "enqueue")
    assert a.state == DRAINING and core.pool.retired == [a.id]
    core.finish(a, session)
    await run_until(lambda: session.sandbox is b)
    assert pipe(a).ops("close") == [{"op": "close", "sid": session.id}]
    assert core.pool.terminated == [(a.id, RETIRED, True)]
    assert [e for e in conn.names() if e != "agent.final_answer"] == []  # a move is silent


async def test_messages_that_arrive_during_a_move_run_after_it_on_the_new_sandbox():
    core, a, conn, session = await setup()
    b = core.add_sandbox(answer=SILENT)
    a.state = DRAINING
    core.recovery.idle(session)
    await run_until(lambda: session.placing)
    core.turns.submit(session, "during the move", None, "enqueue")
    assert conn.names() == ["agent.message_queued"]
    core.placement.on_control(b, answer(b, session.id))
    await run_until(lambda: session.turn is not None)
    assert session.sandbox is b and pipe(b).ops("turn")[0]["text"] == "during the move"
    assert pipe(a).ops("turn") == []


async def test_migrate_idle_moves_idle_sessions_and_leaves_running_ones():
    core, a, conn, idle = await setup()
    busy = await core.session(conn)
    core.turns.submit(busy, "long", None, "enqueue")
    b = core.add_sandbox()
    a.state = DRAINING
    core.recovery.migrate_idle()
    await run_until(lambda: idle.sandbox is b)
    assert busy.sandbox is a and core.pool.terminated == []  # not drained yet
    core.finish(a, busy)
    await run_until(lambda: busy.sandbox is b)
    assert core.pool.terminated == [(a.id, RETIRED, True)]


async def test_a_sandbox_lost_during_a_move_off_restores_the_session():
    core, a, conn, session = await setup()
    b = core.add_sandbox(answer=[FAILED, OPENED])
    a.state = DRAINING
    core.recovery.idle(session)
    await run_until(lambda: pipe(b).raw)
    core.pool.lose(a, RETIRED)
    await run_until(lambda: session.sandbox is b)
    assert conn.names() == ["system.notice"] and conn.events()[0]["metadata"]["restored"] is True


async def test_a_move_off_with_nowhere_to_go_waits_for_a_ready_sandbox_instead_of_spinning():
    core, a, conn, session = await setup()
    a.state = DRAINING
    attempts = []
    choose = core.placement.choose
    core.placement.choose = lambda exclude=None: attempts.append(exclude) or choose(exclude)  # type: ignore
    core.recovery.idle(session)
    await spin(100)
    assert len(attempts) <= 2, f"{len(attempts)} move attempts in 100 loop iterations"


# Closing a session while an open is in flight ----------------------------------------------------------
async def test_a_session_closed_during_its_restore_is_not_bound_afterwards():
    core, a, conn, session = await setup()
    b = core.add_sandbox(answer=SILENT)
    core.pool.lose(a)
    await run_until(lambda: session.placing)
    core.router.end_session(session, "closed by the client")
    core.placement.on_control(b, answer(b, session.id))
    await run_until(lambda: not session.restoring)
    assert session.id not in b.hosted and session.sandbox is None
    assert conn.names()[-1] == "agent.session_end"


async def test_a_session_closed_during_a_move_is_not_bound_afterwards():
    core, a, conn, session = await setup()
    b = core.add_sandbox(answer=SILENT)
    a.state = DRAINING
    core.recovery.idle(session)
    await run_until(lambda: session.placing)
    core.router.end_session(session, "closed by the client")
    core.placement.on_control(b, answer(b, session.id))
    await spin(10)
    assert session.id not in b.hosted and session.sandbox is None


# Leases (shared stores) ------------------------------------------------------------------------------------
async def test_a_detached_idle_session_lets_go_of_its_lease():
    store = FakeStore(shared=True)
    core, a, conn, session = await setup(store)
    core.router.disconnected(conn)  # type: ignore[arg-type]
    await run_until(lambda: store.called("release"))
    assert store.called("release") == [("release", session.id, "node-a")] and not session.leased
    assert session.connection is None and session.detached_at is not None
    core.recovery.let_go(session)  # already let go
    await spin(5)
    assert len(store.called("release")) == 1


async def test_let_go_keeps_the_lease_while_the_session_is_in_use():
    store = FakeStore(shared=True)
    core, a, conn, session = await setup(store)
    core.recovery.let_go(session)  # attached
    session.connection = None
    core.turns.submit(session, "running", None, "enqueue")
    core.recovery.let_go(session)  # a turn runs
    core.turns.submit(session, "queued", None, "enqueue")
    core.finish(a, session)
    core.recovery.let_go(session)  # a turn runs again (the queued one)
    await spin(5)
    assert store.called("release") == [] and session.leased
    core.finish(a, session)  # idle and detached at last: on_idle lets go
    await run_until(lambda: store.called("release"))


async def test_an_unshared_store_keeps_every_lease():
    store = FakeStore(shared=False)
    core, a, conn, session = await setup(store)
    session.connection = None
    core.recovery.let_go(session)
    await spin(5)
    assert store.called("release") == [] and session.leased


async def test_forget_drops_this_nodes_copy_without_deleting_the_stored_one():
    store = FakeStore(shared=True)
    core, a, conn, session = await setup(store)
    core.turns.submit(session, "running", None, "enqueue")
    tid = session.turn.id
    core.turns.submit(session, "queued", None, "enqueue")
    conn.clear()
    core.recovery.forget(session)
    assert core.registry.get(session.id) is None and store.called("delete") == []
    assert session.id not in conn.sessions and session.connection is None
    assert session.sandbox is None and pipe(a).ops("close") == [{"op": "close", "sid": session.id}]
    assert not session.inbox and session.turn is None and tid in session.ended_turns
    assert conn.received == []  # another node owns it now: this one says nothing
    core.recovery.forget(session)  # not ours any more: nothing happens
    assert len(pipe(a).ops("close")) == 1
