"""Placement: the session <-> sandbox binding and which frames a sandbox may send.

Real Placement over real Sandbox records with recording pipes; the test plays
the sandbox by feeding ``on_control`` the answers a sandbox would give.
"""

import asyncio

import pytest

from myagent.protocol.errors import ErrorCode
from myagent.supervisor.placement import PlacementError
from myagent.supervisor.sandboxes import DEAD, DRAINING, STARTING

from .fakes import FAILED, SILENT, Core, answer, pipe, run_until


def opened(core, sandbox, session):
    core.placement.on_control(sandbox, answer(sandbox, session.id))


def unbound_session(core, history=None):
    session, _ = core.registry.create("alice", history)
    return session


# choose() -------------------------------------------------------------------------------------
def test_choose_takes_the_least_loaded_ready_sandbox_with_room():
    core = Core(sessions_per_worker=2)
    busy, idle, starting, draining = (core.add_sandbox() for _ in range(4))
    starting.state, draining.state = STARTING, DRAINING
    busy.hosted["s_x"] = object()
    assert core.placement.choose() is idle
    assert core.placement.choose(exclude=idle) is busy
    idle.hosted.update({"s_1": object(), "s_2": object()})  # full
    busy.opening["s_3"] = object()  # opens count as load: busy is full too
    assert core.placement.choose() is None
    assert core.placement.free_slots == 0


def test_free_slots_counts_ready_sandboxes_only():
    core = Core(sessions_per_worker=3)
    a = core.add_sandbox()
    core.add_sandbox(state=DRAINING)
    a.hosted["s_1"] = object()
    assert core.placement.free_slots == 2


# host() ---------------------------------------------------------------------------------------
async def test_host_binds_only_after_the_sandbox_answers_opened():
    core = Core()
    sandbox = core.add_sandbox(answer=SILENT)
    session = unbound_session(core, [{"role": "user", "content": "earlier"}])
    task = asyncio.ensure_future(core.placement.host(session))
    await run_until(lambda: pipe(sandbox).raw)
    assert pipe(sandbox).opens() == [(session.id, [{"role": "user", "content": "earlier"}])]
    assert session.placing and session.sandbox is None and session.id not in sandbox.hosted
    assert sandbox.load == 1  # the pending open holds a slot
    opened(core, sandbox, session)
    assert await task is sandbox
    assert session.sandbox is sandbox and sandbox.hosted[session.id] is session
    assert not session.placing and not sandbox.opening
    assert pipe(sandbox).ops("close") == []


@pytest.mark.parametrize("answer", ["open_failed", "timeout", "too large"])
async def test_a_failed_open_leaves_the_session_unbound_and_tells_the_sandbox_to_forget(answer):
    core = Core(sandbox_open_timeout=0.01)
    sandbox = core.add_sandbox(answer=FAILED if answer == "open_failed" else SILENT)
    pipe(sandbox).too_large = answer == "too large"
    session = unbound_session(core)
    with pytest.raises(PlacementError) as failure:
        await core.placement.host(session)
    assert failure.value.code is ErrorCode.INTERNAL_ERROR
    assert session.sandbox is None and not session.placing
    assert session.id not in sandbox.hosted and not sandbox.opening
    assert session.id in sandbox.closing
    assert pipe(sandbox).ops("close") == [{"op": "close", "sid": session.id}]


async def test_host_without_room_is_server_busy_and_sends_nothing():
    core = Core(sessions_per_worker=1)
    sandbox = core.add_sandbox()
    sandbox.hosted["s_other"] = object()
    session = unbound_session(core)
    with pytest.raises(PlacementError) as failure:
        await core.placement.host(session)
    assert failure.value.code is ErrorCode.SERVER_BUSY
    assert pipe(sandbox).raw == [] and not session.placing


async def test_an_open_pending_when_the_sandbox_is_lost_fails_without_a_close():
    core = Core()
    sandbox = core.add_sandbox(answer=SILENT)
    session = unbound_session(core)
    task = asyncio.ensure_future(core.placement.host(session))
    await run_until(lambda: sandbox.opening)
    sandbox.state = DEAD
    assert core.placement.lost(sandbox) == []
    with pytest.raises(PlacementError):
        await task
    assert session.sandbox is None and pipe(sandbox).ops("close") == []


# stop_opening() (drain) ----------------------------------------------------------------------
async def test_stop_opening_ends_pending_opens_with_shutting_down_quietly(caplog):
    """An open in flight when the server drains must not hold its client's request (and the
    connection's close) until the sandbox is stopped under it, nor log a warning."""
    core = Core()
    sandbox = core.add_sandbox(answer=SILENT)
    session = unbound_session(core)
    task = asyncio.ensure_future(core.placement.host(session))
    await run_until(lambda: sandbox.opening)
    with caplog.at_level("INFO", logger="myagent.supervisor.placement"):
        core.placement.stop_opening()
        with pytest.raises(PlacementError) as failure:
            await task
    assert failure.value.code is ErrorCode.SHUTTING_DOWN
    assert session.sandbox is None and not session.placing and not sandbox.opening
    assert pipe(sandbox).ops("close") == [{"op": "close", "sid": session.id}]  # it may open it late
    assert [r.levelname for r in caplog.records] == ["INFO"], caplog.text
    # From now on nothing is placed: no open is sent at all.
    later = unbound_session(core)
    with pytest.raises(PlacementError) as failure:
        await core.placement.host(later)
    assert failure.value.code is ErrorCode.SHUTTING_DOWN and len(pipe(sandbox).opens()) == 1


async def test_an_open_lost_to_the_pool_stopping_is_shutting_down_not_a_warning(caplog):
    core = Core()
    sandbox = core.add_sandbox(answer=SILENT)
    session = unbound_session(core)
    task = asyncio.ensure_future(core.placement.host(session))
    await run_until(lambda: sandbox.opening)
    core.pool.stopping = True  # SandboxPool.stop(): every sandbox is stopped
    sandbox.state = DEAD
    with caplog.at_level("INFO", logger="myagent.supervisor.placement"):
        core.placement.lost(sandbox)
        with pytest.raises(PlacementError) as failure:
            await task
    assert failure.value.code is ErrorCode.SHUTTING_DOWN
    assert not [r for r in caplog.records if r.levelno >= 30], caplog.text


async def test_stop_opening_keeps_idle_sessions_where_they_are():
    core = Core()
    old, new = core.add_sandbox(), core.add_sandbox()
    session = unbound_session(core)
    await core.placement.host(session, old)
    core.placement.stop_opening()
    assert await core.placement.move(session, new) is False
    assert session.sandbox is old and pipe(new).opens() == []


async def test_opened_from_a_sandbox_that_died_meanwhile_does_not_bind():
    core = Core()
    sandbox = core.add_sandbox(answer=SILENT)
    session = unbound_session(core)
    task = asyncio.ensure_future(core.placement.host(session))
    await run_until(lambda: sandbox.opening)
    opened(core, sandbox, session)
    sandbox.state = DEAD  # died before host() resumed
    with pytest.raises(PlacementError):
        await task
    assert session.sandbox is None and session.id not in sandbox.hosted


async def test_a_second_open_of_the_same_session_on_one_sandbox_is_refused():
    core = Core()
    sandbox = core.add_sandbox(answer=SILENT)
    session = unbound_session(core)
    first = asyncio.ensure_future(core.placement.host(session, sandbox))
    await run_until(lambda: sandbox.opening)
    other = unbound_session(core)
    other.id = session.id  # same sid, e.g. a racing revive
    with pytest.raises(PlacementError) as failure:
        await core.placement.host(other, sandbox)
    assert failure.value.code is ErrorCode.SESSION_BUSY
    opened(core, sandbox, session)
    assert await first is sandbox


# move() ---------------------------------------------------------------------------------------
async def test_move_opens_on_the_target_first_then_closes_the_old():
    core = Core()
    old = core.add_sandbox()
    session = await core.session()
    target = core.add_sandbox(answer=SILENT)
    task = asyncio.ensure_future(core.placement.move(session))
    await run_until(lambda: pipe(target).raw)
    # While the target has not answered, the session is still the old sandbox's.
    assert session.sandbox is old and old.hosted[session.id] is session and session.placing
    assert pipe(old).ops("close") == []
    opened(core, target, session)
    assert await task is True
    assert session.sandbox is target and target.hosted[session.id] is session
    assert session.id not in old.hosted and session.id in old.closing
    assert pipe(old).ops("close") == [{"op": "close", "sid": session.id}]
    assert pipe(target).ops("close") == [] and not session.placing


async def test_move_carries_the_current_history():
    core = Core()
    core.add_sandbox()
    session = await core.session(history=[{"role": "user", "content": "hi"}])
    session.add_history('{"role":"assistant","content":"hello"}')
    target = core.add_sandbox()
    assert await core.placement.move(session, target)
    assert pipe(target).opens() == [(session.id, [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "hello"}])]


async def test_a_failed_move_leaves_the_session_on_the_old_sandbox():
    core = Core()
    old = core.add_sandbox()
    session = await core.session()
    target = core.add_sandbox(answer=FAILED)
    assert await core.placement.move(session) is False
    assert session.sandbox is old and old.hosted[session.id] is session and not session.placing
    assert pipe(old).ops("close") == []
    assert session.id not in target.hosted and session.id in target.closing
    assert pipe(target).ops("close") == [{"op": "close", "sid": session.id}]


async def test_move_to_the_same_sandbox_re_opens_it_in_place():
    core = Core()
    sandbox = core.add_sandbox()
    session = await core.session()
    session.add_history('{"role":"user","content":"kept"}')
    assert await core.placement.move(session, sandbox) is True
    assert session.sandbox is sandbox and sandbox.hosted[session.id] is session
    assert [h for _, h in pipe(sandbox).opens()] == [[], [{"role": "user", "content": "kept"}]]
    # Re-opened, not moved: the sandbox must not be told to forget it.
    assert pipe(sandbox).ops("close") == [] and session.id not in sandbox.closing


async def test_move_when_the_old_sandbox_dies_meanwhile_binds_to_the_target():
    core = Core()
    old = core.add_sandbox()
    session = await core.session()
    target = core.add_sandbox(answer=SILENT)
    task = asyncio.ensure_future(core.placement.move(session, target))
    await run_until(lambda: target.opening)
    old.state = DEAD
    assert core.placement.lost(old) == [session]
    opened(core, target, session)
    assert await task is True
    assert session.sandbox is target and pipe(old).ops("close") == []


async def test_move_does_nothing_for_an_unbound_or_placing_session_or_without_a_target():
    core = Core()
    sandbox = core.add_sandbox()
    assert await core.placement.move(unbound_session(core)) is False
    session = await core.session()
    assert await core.placement.move(session) is False  # no other sandbox
    session.placing = True
    assert await core.placement.move(session, core.add_sandbox()) is False
    assert len(pipe(sandbox).raw) == 1 and session.sandbox is sandbox


# unhost() and lost() --------------------------------------------------------------------------------
async def test_unhost_unbinds_at_once_and_records_the_close():
    core = Core()
    sandbox = core.add_sandbox()
    session = await core.session()
    core.placement.unhost(session)
    assert session.sandbox is None and session.id not in sandbox.hosted
    assert session.id in sandbox.closing
    assert pipe(sandbox).ops("close") == [{"op": "close", "sid": session.id}]
    core.placement.unhost(session)  # already unbound: nothing more
    assert len(pipe(sandbox).ops("close")) == 1
    core.placement.on_control(sandbox, {"op": "closed", "sid": session.id})
    assert session.id not in sandbox.closing and sandbox.offences == 0


async def test_lost_fails_pending_opens_and_unbinds_every_hosted_session():
    core = Core()
    sandbox = core.add_sandbox()
    a, b = await core.session(), await core.session()
    pipe(sandbox).answer = SILENT
    pending = unbound_session(core)
    task = asyncio.ensure_future(core.placement.host(pending, sandbox))
    await run_until(lambda: sandbox.opening)
    core.placement.unhost(a)
    sandbox.state = DEAD
    assert set(core.placement.lost(sandbox)) == {b}
    assert a.sandbox is b.sandbox is None and not sandbox.hosted and not sandbox.closing
    with pytest.raises(PlacementError):
        await task
    assert pending.sandbox is None


# admit() --------------------------------------------------------------------------------------------
async def running(core, sandbox=None):
    conn_session = await core.session(sandbox=sandbox)
    core.turns.submit(conn_session, "hello", None, "enqueue")
    return conn_session


async def test_admit_accepts_the_hosting_sandbox_for_the_running_turn():
    core = Core()
    sandbox = core.add_sandbox()
    session = await running(core)
    assert core.placement.admit(sandbox, session.id.encode(), session.turn.id.encode()) is session
    assert sandbox.offences == 0


async def test_late_frames_are_dropped_quietly():
    core = Core()
    sandbox = core.add_sandbox()
    session = await running(core)
    ended = core.finish(sandbox, session)
    # A late frame of the turn the front already ended.
    assert core.placement.admit(sandbox, session.id.encode(), ended.encode()) is None
    # A frame for a session the front asked the sandbox to close, before it confirmed.
    core.placement.unhost(session)
    assert core.placement.admit(sandbox, session.id.encode(), ended.encode()) is None
    assert sandbox.offences == 0 and not core.metrics.frames_rejected


async def test_after_the_close_is_confirmed_frames_for_the_session_are_offences():
    core = Core()
    sandbox = core.add_sandbox()
    session = await running(core)
    tid = session.turn.id
    core.placement.unhost(session)
    core.placement.on_control(sandbox, {"op": "closed", "sid": session.id})
    assert core.placement.admit(sandbox, session.id.encode(), tid.encode()) is None
    assert sandbox.offences == 1
    assert core.metrics.frames_rejected == {"session not hosted by this sandbox": 1}


@pytest.mark.parametrize("case", ["other sandbox's session", "unknown session", "unknown turn",
                                  "no turn running", "another session's turn"])
async def test_anything_else_is_an_offence(case):
    core = Core()
    a, b = core.add_sandbox(), core.add_sandbox()
    mine = await running(core, a)
    theirs = await running(core, b)
    sid, tid = mine.id, mine.turn.id
    if case == "other sandbox's session":
        sid, tid = theirs.id, theirs.turn.id
    elif case == "unknown session":
        sid = "s_nobody"
    elif case == "unknown turn":
        tid = "t_forged"
    elif case == "no turn running":
        core.finish(a, mine)
        tid = "t_forged"
    elif case == "another session's turn":
        tid = theirs.turn.id
    assert core.placement.admit(a, sid.encode(), tid.encode()) is None
    assert a.offences == 1 and b.offences == 0
    assert sum(core.metrics.frames_rejected.values()) == 1


async def test_max_offences_replace_the_sandbox_as_misbehaved():
    core = Core(sandbox_max_offences=3)
    sandbox = core.add_sandbox()
    for _ in range(2):
        core.placement.admit(sandbox, b"s_nobody", b"t_x")
    assert core.pool.terminated == []
    core.placement.admit(sandbox, b"s_nobody", b"t_x")
    assert core.pool.terminated == [(sandbox.id, "SANDBOX_MISBEHAVED", False)]
    assert sandbox.kill_reason == "SANDBOX_MISBEHAVED"


# on_control() ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [
    {"op": "opened", "sid": "s_never_asked"},
    {"op": "open_failed", "sid": "s_never_asked", "error": "x"},
    {"op": "opened", "sid": 7},
    {"op": "opened"},
    {"op": "launch_missiles"},
    {"op": None},
])
def test_control_frames_nobody_asked_for_are_offences(frame):
    core = Core()
    sandbox = core.add_sandbox()
    core.placement.on_control(sandbox, frame)
    assert sandbox.offences == 1


def test_closed_for_an_unknown_session_is_harmless():
    core = Core()
    sandbox = core.add_sandbox()
    core.placement.on_control(sandbox, {"op": "closed", "sid": "s_whatever"})
    assert sandbox.offences == 0
    core.placement.on_control(sandbox, {"op": "closed", "sid": 3})  # not a session id at all
    assert sandbox.offences == 1


async def test_open_failed_reason_is_clipped_and_a_second_answer_is_ignored():
    core = Core()
    sandbox = core.add_sandbox(answer=SILENT)
    session = unbound_session(core)
    task = asyncio.ensure_future(core.placement.host(session))
    await run_until(lambda: sandbox.opening)
    _, future = sandbox.opening[session.id]
    core.placement.on_control(sandbox, answer(sandbox, session.id, FAILED, error="x" * 2000))
    core.placement.on_control(sandbox, answer(sandbox, session.id))  # same iteration: ignored
    assert future.result() == "x" * 500
    with pytest.raises(PlacementError):
        await task
    assert session.sandbox is None and sandbox.offences == 0


async def test_a_late_answer_to_a_timed_out_open_is_not_an_offence():
    core = Core(sandbox_open_timeout=0.01)
    sandbox = core.add_sandbox(answer=SILENT)
    session = unbound_session(core)
    with pytest.raises(PlacementError):
        await core.placement.host(session)
    assert session.id in sandbox.closing
    core.placement.on_control(sandbox, answer(sandbox, session.id))
    assert sandbox.offences == 0


async def test_a_late_answer_to_a_timed_out_open_is_quiet_but_an_unasked_one_is_an_offence():
    core = Core(sandbox_open_timeout=0.01)
    sandbox = core.add_sandbox(answer=SILENT)
    session = unbound_session(core)
    with pytest.raises(PlacementError):
        await core.placement.host(session)
    core.placement.on_control(sandbox, {"op": "opened", "sid": session.id, "n": sandbox.last_nonce})
    assert sandbox.offences == 0
    core.placement.on_control(sandbox, {"op": "opened", "sid": session.id, "n": sandbox.last_nonce + 1})
    core.placement.on_control(sandbox, {"op": "opened", "sid": session.id})
    assert sandbox.offences == 2
