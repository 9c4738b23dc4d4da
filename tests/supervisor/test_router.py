"""Router: what each user.* event does, seen from fake client connections.

Every handler runs through ``Router.handle`` (refusals become one
``system.error`` naming the request) over the real core and fake sandboxes.
"""

import time

import pytest

from myagent.supervisor.sandboxes import READY
from myagent.supervisor.store.base import StoreError

from .fakes import FAILED, Core, FakeConnection, FakeStore, pipe, run_until


async def setup(**options):
    core = Core(**options)
    sandbox = core.add_sandbox()
    conn = FakeConnection()
    core.router.connected(conn)  # type: ignore[arg-type]
    return core, sandbox, conn


async def create(core, conn):
    """user.create_session; returns (session, resume token)."""
    await core.router.handle(conn, {"event": "user.create_session"})
    created = conn.events("agent.session_created")[-1]
    return core.registry.get(created["session_id"]), created["metadata"]["resume_token"]


def error(conn):
    """The last system.error the connection received, and its metadata."""
    err = conn.events("system.error")[-1]
    return err["metadata"]["error_code"], err["metadata"]


def sans_time(doc):
    return {k: v for k, v in doc.items() if k != "timestamp"}


# Connections and sessions ---------------------------------------------------------------------------
async def test_connected_says_who_the_connection_is_and_its_limits():
    core, sandbox, conn = await setup(max_queued_messages=7)
    hello = conn.events()[0]
    assert hello["event"] == "system.connected" and "session_id" not in hello
    assert hello["metadata"]["connection_id"] == conn.id
    assert hello["metadata"]["agent_name"] == "fake-agent"
    assert hello["metadata"]["limits"]["max_queued_messages"] == 7


async def test_create_session_hosts_it_and_attaches_it_to_the_connection():
    core, sandbox, conn = await setup()
    session, token = await create(core, conn)
    assert session.sandbox is sandbox and session.connection is conn and conn.sessions == {session.id}
    created = conn.events("agent.session_created")[0]
    assert created["seq"] == 1 and created["metadata"]["connection_id"] == conn.id
    assert created["metadata"]["tools"] == [{"name": "t1", "description": "tool one", "requires_confirmation": False}]
    assert session.check_token(token) and core.metrics.sessions_created == 1


@pytest.mark.parametrize("failure, code", [("full", "SERVER_BUSY"), ("open_failed", "INTERNAL_ERROR")])
async def test_a_session_that_cannot_be_placed_is_refused_and_forgotten(failure, code):
    core, sandbox, conn = await setup(sessions_per_worker=1)
    if failure == "full":
        sandbox.hosted["s_other"] = object()
    else:
        pipe(sandbox).answer = FAILED
    await core.router.handle(conn, {"event": "user.create_session"})
    assert error(conn)[0] == code and len(core.registry) == 0 and not conn.sessions


async def test_admission_limits():
    core, sandbox, conn = await setup(max_sessions_per_connection=1, max_sessions=2)
    await create(core, conn)
    await core.router.handle(conn, {"event": "user.create_session"})
    assert error(conn)[0] == "TOO_MANY_SESSIONS"
    await create(core, FakeConnection("bob"))
    carol = FakeConnection("carol")
    await core.router.handle(carol, {"event": "user.create_session"})
    assert error(carol)[0] == "SERVER_BUSY" and len(core.registry) == 2


async def test_an_unavailable_agent_refuses_new_sessions():
    core, sandbox, conn = await setup()
    core.pool.unavailable_reason = "restart budget exhausted"
    await core.router.handle(conn, {"event": "user.create_session"})
    assert error(conn)[0] == "AGENT_UNAVAILABLE" and len(core.registry) == 0


async def test_at_the_address_cap_the_oldest_detached_session_is_evicted():
    core, sandbox, conn = await setup(max_sessions_per_address=2)
    first, _ = await create(core, conn)
    second, _ = await create(core, conn)
    core.router.disconnected(conn)  # both detached now
    first.detached_at, second.detached_at = 1.0, 2.0
    new_conn = FakeConnection()
    await create(core, new_conn)
    assert core.registry.get(first.id) is None and core.registry.get(second.id) is second
    assert core.metrics.sessions_evicted == 1 and pipe(sandbox).ops("close", first.id)
    core.router.connected(new_conn)  # type: ignore[arg-type]
    await core.router.handle(new_conn, {"event": "user.create_session"})
    await core.router.handle(new_conn, {"event": "user.create_session"})
    assert error(new_conn)[0] == "TOO_MANY_SESSIONS"  # nothing detached is left to evict


async def test_close_session_interrupts_the_turn_once_and_forgets_the_session():
    core, sandbox, conn = await setup()
    session, _ = await create(core, conn)
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "hi"})
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "queued"})
    tid = session.turn.id
    conn.clear()
    await core.router.handle(conn, {"event": "user.close_session", "session_id": session.id})
    # The running turn and the queued one each end once, before the session does.
    assert conn.names() == ["agent.interrupted", "agent.error", "agent.session_end"]
    assert conn.events()[0]["metadata"]["turn_id"] == tid
    assert conn.events()[0]["metadata"]["reason"] == "SESSION_CLOSED"
    assert conn.events()[1]["metadata"]["error_code"] == "SESSION_CLOSED"
    assert core.registry.get(session.id) is None and not conn.sessions and not session.inbox
    assert pipe(sandbox).ops("close") == [{"op": "close", "sid": session.id}]
    assert len(pipe(sandbox).ops("turn")) == 1  # the queued message never ran
    core.event(sandbox, session, "agent.final_answer", "late", turn_id=tid)  # late: quiet
    assert sandbox.offences == 0 and conn.names()[-1] == "agent.session_end"


# Ownership -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [
    {"event": "user.message", "content": "hi"},
    {"event": "user.cancel"},
    {"event": "user.response", "step_id": "x", "content": {"confirmed": True}},
    {"event": "user.ack", "content": {"last_seq": 1}},
    {"event": "user.close_session"},
])
async def test_another_connections_session_is_not_found_exactly_like_a_missing_one(frame):
    core, sandbox, owner = await setup()
    session, _ = await create(core, owner)
    intruder = FakeConnection("alice")  # even the same principal: ownership is per connection
    await core.router.handle(intruder, {**frame, "session_id": session.id})
    await core.router.handle(intruder, {**frame, "session_id": "s_doesnotexist"})
    theirs, missing = intruder.events()
    assert theirs["metadata"]["error_code"] == "SESSION_NOT_FOUND" and theirs["metadata"]["field"] == "session_id"
    assert theirs["metadata"]["request_event"] == frame["event"]
    theirs["metadata"].pop("session_id"), missing["metadata"].pop("session_id")
    assert sans_time(theirs) == sans_time(missing)
    assert core.registry.get(session.id) is session and session.turn is None
    assert owner.names() == ["system.connected", "agent.session_created"]


async def test_ack_by_event_id_of_another_connections_session_is_not_found():
    core, sandbox, owner = await setup()
    session, _ = await create(core, owner)
    intruder = FakeConnection()
    await core.router.handle(intruder, {"event": "user.ack", "content": {"last_event_id": f"{session.id}:1"}})
    assert error(intruder)[0] == "SESSION_NOT_FOUND" and len(session.replay) == 1


# Messages ------------------------------------------------------------------------------------------------
async def test_message_starts_a_turn_and_a_duplicate_message_id_is_ignored():
    core, sandbox, conn = await setup()
    session, _ = await create(core, conn)
    frame = {"event": "user.message", "session_id": session.id, "content": "hi", "metadata": {"message_id": "m1"}}
    await core.router.handle(conn, frame)
    await core.router.handle(conn, frame)
    assert len(pipe(sandbox).ops("turn")) == 1 and not session.inbox
    dup = conn.events("system.notice")[-1]
    assert dup["metadata"]["duplicate"] is True and dup["metadata"]["message_id"] == "m1"


async def test_message_limits_and_multitask_modes():
    core, sandbox, conn = await setup(max_user_message_chars=5, multitask="reject")
    session, _ = await create(core, conn)
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "toolong"})
    code, meta = error(conn)
    assert code == "MESSAGE_TOO_LARGE" and meta["field"] == "content"
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "one"})
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "two"})
    assert error(conn)[0] == "SESSION_BUSY"  # the server's default multitask mode
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "three",
                                    "metadata": {"multitask": "enqueue"}})
    assert [t.text for t in session.inbox] == ["three"]


async def test_message_to_an_unplaced_session_of_an_unavailable_agent_is_refused():
    core, sandbox, conn = await setup()
    session, _ = await create(core, conn)
    core.placement.unhost(session)
    core.pool.unavailable_reason = "restart budget exhausted"
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "hi"})
    assert error(conn)[0] == "AGENT_UNAVAILABLE" and not session.inbox


# Cancel and response ----------------------------------------------------------------------------------------
async def test_cancel_without_a_turn_is_no_active_turn_and_with_one_cancels_it():
    core, sandbox, conn = await setup()
    session, _ = await create(core, conn)
    await core.router.handle(conn, {"event": "user.cancel", "session_id": session.id})
    assert error(conn)[0] == "NO_ACTIVE_TURN"
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "hi"})
    await core.router.handle(conn, {"event": "user.cancel", "session_id": session.id})
    assert pipe(sandbox).ops("cancel") == [{"op": "cancel", "sid": session.id, "turn": session.turn.id,
                                            "reason": "CANCELLED"}]


async def test_response_answers_a_pending_confirmation_once():
    core, sandbox, conn = await setup()
    session, _ = await create(core, conn)
    await core.router.handle(conn, {"event": "user.response", "session_id": session.id, "step_id": "call_1",
                                    "content": {"confirmed": True}})
    assert error(conn)[0] == "STEP_NOT_FOUND"
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "hi"})
    core.event(sandbox, session, "agent.user_confirm", "Allow?", step_id="call_1",
               tool_name="t1", tool_args={}, tool_description="d")
    response = {"event": "user.response", "session_id": session.id, "step_id": "call_1",
                "content": {"approved": False}}
    await core.router.handle(conn, response)
    assert pipe(sandbox).ops("confirm") == [{"op": "confirm", "sid": session.id, "step": "call_1", "ok": False}]
    await core.router.handle(conn, response)
    code, meta = error(conn)
    assert code == "STEP_NOT_FOUND" and meta["field"] == "step_id" and len(pipe(sandbox).ops("confirm")) == 1


# Ack ---------------------------------------------------------------------------------------------------------
async def test_ack_with_last_event_id_and_no_session_id_trims_the_replay():
    core, sandbox, conn = await setup()
    session, _ = await create(core, conn)
    for i in range(3):
        session.emit("system.notice", i, {})
    await core.router.handle(conn, {"event": "user.ack", "content": {"last_event_id": f"{session.id}:3"}})
    assert [seq for seq, _ in session.replay] == [4]
    await core.router.handle(conn, {"event": "user.ack", "session_id": session.id, "content": {"last_seq": 4}})
    assert not session.replay


@pytest.mark.parametrize("content", [{}, {"last_event_id": "no-colon"}, {"last_event_id": "s_x:abc"}])
async def test_ack_without_a_usable_seq_is_a_schema_violation(content):
    core, sandbox, conn = await setup()
    session, _ = await create(core, conn)
    await core.router.handle(conn, {"event": "user.ack", "session_id": session.id, "content": content})
    code, meta = error(conn)
    assert code == "SCHEMA_VIOLATION" and meta["field"] == "content.last_seq"


# Reconnect -----------------------------------------------------------------------------------------------------
async def test_reconnect_replays_missed_events_in_order_then_resumes_and_notifies_the_old_connection():
    core, sandbox, old = await setup()
    session, token = await create(core, old)
    for i in range(4):
        session.emit("system.notice", f"n{i}", {})  # seq 2..5
    sent = list(old.received[-4:])
    new = FakeConnection()
    await core.router.handle(new, {"event": "user.reconnect", "session_id": session.id,
                                   "content": {"resume_token": token, "last_seq": 3}})
    assert new.received[:2] == sent[2:]  # seq 4 and 5, byte for byte, first
    resumed = new.events()[2]
    assert resumed["event"] == "agent.session_resumed" and resumed["seq"] == 6
    usage = resumed["metadata"].pop("usage")
    assert resumed["metadata"] == {"replayed": 2, "last_seq": 5, "turn_running": False, "queued": 0,
                                   "connection_id": new.id}
    assert usage["turns"] == 0 and usage["total_tokens"] == 0
    notice = old.events()[-1]
    assert notice["event"] == "system.notice" and notice["metadata"] == {"session_id": session.id,
                                                                         "taken_over": True}
    assert session.connection is new and new.sessions == {session.id} and not old.sessions
    session.emit("system.notice", "after", {})
    assert old.events()[-1] == notice and new.events()[-1]["content"] == "after"


async def test_reconnect_after_the_buffer_lost_events_says_where_the_gap_starts():
    core, sandbox, conn = await setup(replay_buffer=2)
    session, token = await create(core, conn)
    for i in range(4):
        session.emit("system.notice", i, {})
    core.router.disconnected(conn)
    new = FakeConnection()
    await core.router.handle(new, {"event": "user.reconnect", "session_id": session.id,
                                   "content": {"resume_token": token, "last_seq": 1}})
    meta = new.events("agent.session_resumed")[0]["metadata"]
    assert meta["replay_gap_from"] == 2 and meta["error_code"] == "REPLAY_UNAVAILABLE" and meta["replayed"] == 2


@pytest.mark.parametrize("who, sid, token", [
    ("alice", "s_missing", "right"), ("alice", "own", "wrong"), ("mallory", "own", "right")])
async def test_reconnect_refusals_reveal_nothing_and_take_nothing_over(who, sid, token):
    core, sandbox, owner = await setup()
    session, real_token = await create(core, owner)
    conn = FakeConnection(who)
    await core.router.handle(conn, {"event": "user.reconnect", "session_id": session.id if sid == "own" else sid,
                                    "content": {"resume_token": real_token if token == "right" else "nope"}})
    err = conn.events()[0]
    assert err["metadata"]["error_code"] == "SESSION_NOT_FOUND"
    assert err["content"] == "No such session, or the resume token is wrong."
    assert session.connection is owner and owner.events()[-1]["event"] == "agent.session_created"


async def test_a_reconnect_over_the_session_limit_leaves_the_owner_untouched():
    core, sandbox, owner = await setup(max_sessions_per_connection=1)
    session, token = await create(core, owner)
    other = FakeConnection()
    await create(core, other)
    await core.router.handle(other, {"event": "user.reconnect", "session_id": session.id,
                                     "content": {"resume_token": token}})
    assert error(other)[0] == "TOO_MANY_SESSIONS" and session.connection is owner


# Draining, disconnects, expiry ---------------------------------------------------------------------------------
async def test_draining_refuses_new_sessions_and_messages_but_not_cancels():
    core, sandbox, conn = await setup()
    session, _ = await create(core, conn)
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "hi"})
    core.router.draining = True
    await core.router.handle(conn, {"event": "user.create_session"})
    assert error(conn)[0] == "SHUTTING_DOWN"
    await core.router.handle(conn, {"event": "user.message", "session_id": session.id, "content": "more"})
    assert error(conn)[0] == "SHUTTING_DOWN" and not session.inbox
    await core.router.handle(conn, {"event": "user.cancel", "session_id": session.id})
    assert len(pipe(sandbox).ops("cancel")) == 1 and len(conn.events("system.error")) == 2


async def test_disconnect_detaches_sessions_which_expire_after_the_ttl():
    core, sandbox, conn = await setup(session_ttl=60)
    session, _ = await create(core, conn)
    core.router.disconnected(conn)
    assert session.connection is None and session.detached_at is not None and not conn.sessions
    assert conn.id not in core.router.connections
    core.router.sweep()
    assert core.registry.get(session.id) is session
    session.detached_at = time.monotonic() - 61
    core.router.sweep()
    assert core.registry.get(session.id) is None and pipe(sandbox).ops("close", session.id)


async def test_an_expired_session_this_node_let_go_of_is_forgotten_not_ended():
    store = FakeStore(shared=True)
    core = Core(store=store, session_ttl=60)
    core.add_sandbox()
    conn = FakeConnection()
    session, _ = await create(core, conn)
    core.router.disconnected(conn)
    await run_until(lambda: not session.leased)
    session.detached_at = time.monotonic() - 61
    core.router.sweep()
    assert core.registry.get(session.id) is None and store.called("delete") == []


async def test_a_store_that_refuses_the_lease_refuses_the_session():
    class RefusingStore(FakeStore):
        async def acquire(self, sid, node, ttl):
            raise StoreError("down")

    store = RefusingStore(shared=True)
    core = Core(store=store)
    sandbox = core.add_sandbox()
    conn = FakeConnection()
    await core.router.handle(conn, {"event": "user.create_session"})
    assert error(conn)[0] == "STORE_UNAVAILABLE" and len(core.registry) == 0
    assert not sandbox.hosted and len(pipe(sandbox).ops("close")) == 1


async def test_broadcasts_reach_every_connection():
    core, sandbox, a = await setup()
    b = FakeConnection()
    core.router.connected(b)  # type: ignore[arg-type]
    core.router.heartbeat()
    core.router.broadcast_notice("reloaded", {"reloaded": True})
    for conn in (a, b):
        assert conn.names()[-2:] == ["system.heartbeat", "system.notice"]
    assert sandbox.state == READY
