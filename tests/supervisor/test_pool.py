"""SandboxPool without processes: frame dispatch, loss reports, respawn policy, retiring.

The pool's zygote is a fake whose ``fork`` records the request and never
answers, so a scheduled respawn is observable (a fork request) without a
process; signals are recorded, never sent.
"""

import asyncio
import signal

import pytest

from myagent.supervisor import pool as pool_module
from myagent.supervisor import sandboxes as sandboxes_module
from myagent.supervisor.exceptions import AgentFileError, SandboxNotReady, SandboxStartError
from myagent.supervisor.pool import EXTRA_IDLE, SandboxPool
from myagent.supervisor.restart import RestartPolicy
from myagent.supervisor.sandboxes import DEAD, DRAINING, READY, RETIRED, SHUTDOWN, STARTING

from .fakes import make_config, make_sandbox, pipe, run_until, spin


class FakeZygote:
    alive = True

    def __init__(self, fail: bool = False) -> None:
        self.forks = 0
        self.fail = fail

    async def fork(self, timeout):
        self.forks += 1
        if self.fail:
            raise SandboxStartError("the zygote is not running")
        await asyncio.get_running_loop().create_future()  # never answers

    async def stop(self, timeout=1.0):
        pass

    def kill(self):
        pass


@pytest.fixture
async def world(monkeypatch):
    """A pool of size 1 with a fake zygote; returns (pool, lost reports, control frames, data frames, signals)."""
    signals = []
    record = lambda sandbox, sig: signals.append((sandbox.id, sig))  # noqa: E731
    monkeypatch.setattr(pool_module, "signal_tree", record)
    monkeypatch.setattr(sandboxes_module, "signal_tree", record)
    pool = SandboxPool(make_config(), 1, {}, RestartPolicy(max_restarts=2, window=60, backoff=0))
    pool.zygotes.current = FakeZygote()  # type: ignore[assignment]
    lost, control, data = [], [], []
    pool.on_lost = lambda sandbox, reason: lost.append((sandbox.id, reason)) or False
    pool.on_control = lambda sandbox, frame: control.append((sandbox.id, frame))
    pool.on_data = lambda sandbox, body: data.append((sandbox.id, body))
    yield pool, lost, control, data, signals
    pool.sandboxes.clear()  # nothing left to stop: no ladder to wait for
    await pool.stop()


def add(pool, sandbox_id=1, state=READY):
    sandbox = make_sandbox(sandbox_id, state)
    pool.sandboxes[sandbox.id] = sandbox
    pool.by_pid[sandbox.pid] = sandbox
    return sandbox


# Frames ------------------------------------------------------------------------------------------
async def test_heartbeat_and_ready_are_the_pools_own_business(world):
    pool, lost, control, data, _ = world
    sandbox = add(pool, state=STARTING)
    sandbox.ready = asyncio.get_running_loop().create_future()
    sandbox.last_beat = 0.0
    pool._frame(sandbox, b'{"op":"hb"}')
    assert sandbox.last_beat > 0 and sandbox.state == STARTING
    pool._frame(sandbox, b'{"op":"ready","pid":1}')
    assert sandbox.state == READY and sandbox.ready.done()
    assert control == [] and data == []


async def test_ready_does_not_revive_a_draining_sandbox(world):
    pool, *_ = world
    sandbox = add(pool, state=DRAINING)
    pool._frame(sandbox, b'{"op":"ready"}')
    assert sandbox.state == DRAINING


@pytest.mark.parametrize("body, frame", [
    (b'{"op":"opened","sid":"s_1"}', {"op": "opened", "sid": "s_1"}),
    (b'{"op":"closed","sid":"s_1"}', {"op": "closed", "sid": "s_1"}),
    (b"{}", {}),
    (b"{not json", {"op": None}),
])
async def test_other_control_ops_go_to_on_control(world, body, frame):
    pool, lost, control, data, _ = world
    sandbox = add(pool)
    pool._frame(sandbox, body)
    assert control == [(sandbox.id, frame)] and data == []


@pytest.mark.parametrize("body", [b"Es\0t\0agent.thinking\0{}", b"Ms\0t\0{}", b"X"])
async def test_data_frames_go_to_on_data_untouched(world, body):
    pool, lost, control, data, _ = world
    sandbox = add(pool)
    pool._frame(sandbox, body)
    assert data == [(sandbox.id, body)] and data[0][1] is body and control == []


# Losses -------------------------------------------------------------------------------------------
async def test_a_crash_is_reported_counted_and_replaced(world):
    pool, lost, control, data, signals = world
    sandbox = add(pool)
    pool._lost(sandbox)
    assert lost == [(sandbox.id, "SANDBOX_CRASHED")]
    assert sandbox.state == DEAD and sandbox.lost_at is not None and sandbox.id not in pool.sandboxes
    assert pool.restarts_by_reason == {"SANDBOX_CRASHED": 1} and list(pool.losses) == [sandbox]
    assert signals == [(sandbox.id, signal.SIGKILL)]  # a closed pipe may hide a live process
    await run_until(lambda: pool.zygotes.current.forks == 1)
    assert pool.policy.recent == 1


async def test_the_kill_reason_names_the_loss(world):
    pool, lost, *_ = world
    sandbox = add(pool)
    pool.terminate(sandbox, "MEMORY_LIMIT")
    pool._lost(sandbox)
    assert lost == [(sandbox.id, "MEMORY_LIMIT")] and pool.restarts_by_reason == {"MEMORY_LIMIT": 1}


async def test_a_loss_is_reported_once(world):
    pool, lost, *_ = world
    sandbox = add(pool)
    pool._lost(sandbox)
    pool._lost(sandbox)
    assert len(lost) == 1 and pool.restarts_by_reason == {"SANDBOX_CRASHED": 1}


async def test_a_retired_sandbox_is_not_a_loss_and_not_replaced(world):
    pool, lost, *_ = world
    sandbox = add(pool, state=DRAINING)
    pool.terminate(sandbox, RETIRED, polite=True)
    pool._lost(sandbox)
    assert lost == [(sandbox.id, RETIRED)] and pool.restarts_by_reason == {} and not pool.losses
    await spin(5)
    assert pool.zygotes.current.forks == 0


async def test_a_crashing_draining_sandbox_already_has_its_replacement(world):
    pool, lost, *_ = world
    sandbox = add(pool, state=DRAINING)
    pool._lost(sandbox)
    assert pool.restarts_by_reason == {"SANDBOX_CRASHED": 1}
    await spin(5)
    assert pool.zygotes.current.forks == 0


async def test_nothing_is_replaced_while_the_pool_stops(world):
    pool, lost, *_ = world
    sandbox = add(pool)
    pool.stopping = True
    pool.terminate(sandbox, SHUTDOWN, polite=True)
    pool._lost(sandbox)
    assert lost == [(sandbox.id, SHUTDOWN)] and pool.restarts_by_reason == {}
    await spin(5)
    assert pool.zygotes.current.forks == 0


async def test_a_loss_blamed_on_a_session_does_not_spend_the_restart_budget(world):
    pool, lost, *_ = world
    pool.on_lost = lambda sandbox, reason: True
    for i in range(3):  # more than max_restarts
        pool._lost(add(pool, i + 1))
    await run_until(lambda: pool.zygotes.current.forks == 3)
    assert pool.policy.recent == 0 and pool.unavailable_reason is None


async def test_past_the_restart_budget_the_agent_is_unavailable(world):
    pool, *_ = world
    for i in range(3):
        pool._lost(add(pool, i + 1))
    await run_until(lambda: pool.zygotes.current.forks == 2)
    assert pool.unavailable_reason and "restart budget exhausted" in pool.unavailable_reason
    await spin(5)
    assert pool.zygotes.current.forks == 2


async def test_a_sandbox_lost_during_its_start_fails_its_ready_future(world):
    pool, *_ = world
    sandbox = add(pool, state=STARTING)
    sandbox.ready = asyncio.get_running_loop().create_future()
    pool._lost(sandbox)
    with pytest.raises(SandboxNotReady):
        sandbox.ready.result()


async def test_exit_reports_are_matched_by_pid(world):
    pool, *_ = world
    sandbox = add(pool)
    pool._on_exit(12345, 1, None)  # not ours
    pool._on_exit(sandbox.pid, None, 9)
    assert sandbox.exited and sandbox.exit_signal == 9 and sandbox.exit_text == "signal 9 (SIGKILL)"
    assert sandbox.pid not in pool.by_pid


# Retiring and shrinking ------------------------------------------------------------------------------
async def test_retire_drains_a_ready_sandbox_and_starts_its_replacement(world):
    pool, *_ = world
    sandbox = add(pool)
    pool.retire(sandbox)
    assert sandbox.state == DRAINING
    await run_until(lambda: pool.zygotes.current.forks == 1)
    pool.retire(sandbox)  # already draining
    await spin(5)
    assert pool.zygotes.current.forks == 1 and pool.ready_count == 0


async def test_stop_if_drained_stops_an_empty_draining_sandbox_politely(world):
    pool, *_ = world
    sandbox = add(pool)
    sandbox.hosted["s_1"] = object()
    pool.stop_if_drained(sandbox)  # not draining
    sandbox.state = DRAINING
    pool.stop_if_drained(sandbox)  # still hosts a session
    assert sandbox.kill_reason is None and pipe(sandbox).frames == []
    del sandbox.hosted["s_1"]
    pool.stop_if_drained(sandbox)
    assert sandbox.kill_reason == RETIRED and pipe(sandbox).frames == [{"op": "stop"}]


async def test_extra_sandboxes_stop_once_empty_for_a_while(world):
    pool, *_ = world  # --workers 1
    base, extra = add(pool, 1), add(pool, 2)
    pool.shrink(100.0)
    assert extra.empty_since == 100.0 and extra.state == READY
    pool.shrink(100.0 + EXTRA_IDLE)
    assert extra.state == READY  # not idle long enough yet
    pool.shrink(100.0 + EXTRA_IDLE + 1)
    assert extra.state == DRAINING and extra.kill_reason == RETIRED and pipe(extra).frames == [{"op": "stop"}]
    assert base.state == READY and base.kill_reason is None  # the pool keeps its --workers


async def test_a_busy_sandbox_is_never_shrunk_and_resets_its_idle_clock(world):
    pool, *_ = world
    empty, busy = add(pool, 1), add(pool, 2)
    busy.empty_since = 1.0
    busy.hosted["s_1"] = object()
    pool.shrink(100.0)
    pool.shrink(100.0 + EXTRA_IDLE + 1)
    assert busy.state == READY and busy.empty_since is None
    assert empty.state == DRAINING  # the busy one counts towards --workers


async def test_grow_spawns_only_within_max_sandboxes(world):
    pool, *_ = world
    assert pool.max_size == 1
    add(pool)
    assert not pool.can_grow
    assert await pool.grow(lambda: None) is None and pool.zygotes.current.forks == 0
    pool.max_size = 2
    pool.zygotes.current.fail = True
    assert pool.can_grow
    assert await pool.grow(lambda: None) is None and pool.zygotes.current.forks == 1
    found = make_sandbox(9)
    assert await pool.grow(lambda: found) is found and pool.zygotes.current.forks == 1


async def test_a_lost_sandboxs_scheduled_replacement_counts_as_capacity(world):
    """A restore that runs before the replacement's task must not grow the pool beside it
    (the zygote kill -9 chaos test found a third sandbox where two belong)."""
    pool, lost, _, _, _ = world
    pool.max_size = 1
    sandbox = add(pool)
    pool._lost(sandbox)  # schedules the replacement; its task has not run yet
    assert not pool.sandboxes and not pool.can_grow
    await run_until(lambda: pool.zygotes.current.forks == 1)  # the replacement is forking: still counted
    assert not pool.can_grow


# Environment -------------------------------------------------------------------------------------
def test_every_new_zygote_gets_an_environment_prepared_for_it():
    """A reload may declare other names: the environment is prepared again for each zygote, and
    the pool reports the current zygote's."""
    from myagent.supervisor.environment import SandboxEnv

    prepared = iter([SandboxEnv({"PATH": "/bin", "A_KEY": "1"}, ("A_KEY",)), SandboxEnv({"PATH": "/bin"})])
    pool = SandboxPool(make_config(), 1, lambda: next(prepared))
    assert pool.env == {} and pool.declared == ()
    first = pool.zygotes.current = pool._new_zygote()
    assert first.env == {"PATH": "/bin", "A_KEY": "1"} and pool.declared == ("A_KEY",)
    second = pool._new_zygote()
    assert second.env == {"PATH": "/bin"} and second.declared == ()
    assert pool.declared == ("A_KEY",), "a zygote not yet current changes nothing"
    assert SandboxPool(make_config(), 1, {"PATH": "/bin"})._new_zygote().env == {"PATH": "/bin"}


async def test_a_reload_whose_zygote_does_not_start_in_time_fails_like_a_broken_file(world, monkeypatch):
    """Server.reload reports an AgentFileError as 'reload failed, the previous version keeps serving';
    a SandboxStartError (the new zygote's load timed out on a busy host) used to escape it as an
    unhandled task traceback."""
    pool, *_ = world
    sandbox = add(pool)
    current = pool.zygotes.current

    async def slow_start():
        raise SandboxStartError("agent.py: loading the agent file took longer than 10s")

    monkeypatch.setattr(pool.zygotes, "replace", slow_start)
    with pytest.raises(AgentFileError, match="took longer than 10s"):
        await pool.reload()
    assert pool.zygotes.current is current and sandbox.state == READY
