"""The termination ladder (stop op, SIGTERM, SIGKILL) and the Sandbox record.

Signals are recorded, never sent (``signal_tree`` and ``os.killpg`` are
replaced), and the ladder's timers are captured from ``loop.call_later`` so
the test fires each rung itself: no waiting for the grace period.
"""

import asyncio
import os
import signal

import pytest

from myagent.supervisor import sandboxes
from myagent.supervisor.sandboxes import SIGKILL, SIGTERM, STOP_OP, Sandbox, terminate

from .fakes import make_sandbox, pipe


class Timers:
    """Captures ``loop.call_later`` so rungs fire when the test says, not after real seconds."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, object, tuple]] = []

    def call_later(self, delay, callback, *args, **kwargs):
        self.pending.append((delay, callback, args))

    def fire(self) -> float:
        delay, callback, args = self.pending.pop(0)
        callback(*args)
        return delay


@pytest.fixture
async def ladder(monkeypatch):
    """(recorded signals, captured timers)."""
    sent: list[tuple[int, int]] = []
    timers = Timers()
    monkeypatch.setattr(sandboxes, "signal_tree", lambda sandbox, sig: sent.append((sandbox.pid, sig)))
    monkeypatch.setattr(asyncio.get_running_loop(), "call_later", timers.call_later)
    return sent, timers


async def test_a_polite_stop_climbs_stop_op_then_sigterm_then_sigkill(ladder):
    sent, timers = ladder
    sandbox = make_sandbox(1)
    terminate(sandbox, "RETIRED", 2.5, polite=True)
    assert pipe(sandbox).frames == [{"op": "stop"}] and sent == [] and sandbox.kill_rung == STOP_OP
    assert sandbox.kill_reason == "RETIRED"
    assert timers.fire() == 2.5
    assert sent == [(sandbox.pid, signal.SIGTERM)] and sandbox.kill_rung == SIGTERM and not pipe(sandbox).aborted
    assert timers.fire() == 2.5
    assert sent[-1] == (sandbox.pid, signal.SIGKILL) and sandbox.kill_rung == SIGKILL
    assert pipe(sandbox).aborted  # the pipe is cut with the last rung
    assert timers.pending == []


async def test_a_kill_starts_at_sigterm(ladder):
    sent, timers = ladder
    sandbox = make_sandbox(1)
    terminate(sandbox, "MEMORY_LIMIT", 1.0)
    assert sent == [(sandbox.pid, signal.SIGTERM)] and pipe(sandbox).frames == []
    timers.fire()
    assert sent[-1] == (sandbox.pid, signal.SIGKILL) and sandbox.kill_rung == SIGKILL


async def test_the_ladder_stops_once_the_sandbox_has_exited(ladder):
    sent, timers = ladder
    sandbox = make_sandbox(1)
    terminate(sandbox, "RETIRED", 1.0, polite=True)
    sandbox.exited = True
    timers.fire()
    assert sent == [] and sandbox.kill_rung == STOP_OP and timers.pending == []


async def test_a_sandbox_is_terminated_only_once(ladder):
    sent, timers = ladder
    sandbox = make_sandbox(1)
    terminate(sandbox, "WORKER_TIMEOUT", 1.0)
    terminate(sandbox, "MEMORY_LIMIT", 1.0)
    terminate(sandbox, "RETIRED", 1.0, polite=True)
    assert sandbox.kill_reason == "WORKER_TIMEOUT" and len(sent) == 1 and len(timers.pending) == 1
    assert pipe(sandbox).frames == []


async def test_an_exited_sandbox_is_not_terminated(ladder):
    sent, timers = ladder
    sandbox = make_sandbox(1)
    sandbox.exited = True
    terminate(sandbox, "MEMORY_LIMIT", 1.0)
    assert sandbox.kill_reason is None and sent == [] and timers.pending == []


async def test_a_negative_grace_is_no_grace(ladder):
    sent, timers = ladder
    terminate(make_sandbox(1), "CPU_LIMIT", -3.0)
    assert timers.pending[0][0] == 0.0


def test_signal_tree_signals_the_group_and_falls_back_to_the_pid(monkeypatch):
    calls = []

    def killpg(pid, sig):
        calls.append(("killpg", pid, sig))
        raise ProcessLookupError

    def kill(pid, sig):
        calls.append(("kill", pid, sig))
        raise PermissionError

    monkeypatch.setattr(os, "killpg", killpg)
    monkeypatch.setattr(os, "kill", kill)
    sandbox = make_sandbox(1)
    sandboxes.signal_tree(sandbox, signal.SIGTERM)  # neither error escapes
    assert calls == [("killpg", sandbox.pid, signal.SIGTERM), ("kill", sandbox.pid, signal.SIGTERM)]


def test_signal_tree_stops_at_the_group_when_it_exists(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: calls.append(("killpg", pid, sig)))
    monkeypatch.setattr(os, "kill", lambda pid, sig: calls.append(("kill", pid, sig)))
    sandbox = make_sandbox(1)
    sandboxes.signal_tree(sandbox, signal.SIGKILL)
    assert calls == [("killpg", sandbox.pid, signal.SIGKILL)]


# The record --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, sig, text", [
    (0, None, "exit 0 (exited normally)"),
    (3, None, "exit 3 (the agent file failed to load)"),
    (6, None, "exit 6 (agent code raised SystemExit)"),
    (42, None, "exit 42"),
    (None, 9, "signal 9 (SIGKILL)"),
    (None, 15, "signal 15 (SIGTERM)"),
    (0, 9, "signal 9 (SIGKILL)"),
    (None, 250, "signal 250 (unknown signal)"),
    (None, None, "unknown"),
])
def test_exit_text_decodes_the_zygotes_report(code, sig, text):
    sandbox = Sandbox(id=1, pid=1)
    sandbox.exit_code, sandbox.exit_signal = code, sig
    assert sandbox.exit_text is None  # not exited yet
    sandbox.exited = True
    assert sandbox.exit_text == text


def test_load_counts_hosted_sessions_and_pending_opens():
    sandbox = Sandbox(id=1, pid=1)
    sandbox.hosted["s_1"] = object()
    sandbox.opening["s_2"] = object()  # type: ignore[assignment]
    sandbox.closing["s_3"] = None
    assert sandbox.load == 2


def test_a_sandbox_without_a_pipe_sends_nothing():
    sandbox = Sandbox(id=1, pid=1)
    sandbox.send({"op": "stop"})
    sandbox.send_raw(b"O\0[]")
