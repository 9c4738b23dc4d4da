"""ZygoteClient: the front's end of the zygote's control socket.

No zygote process: ``subprocess.Popen`` is replaced by a fake that keeps the
control socket handed to the child (``pass_fds``), and the test plays the
zygote on it: it reads fork requests with their SCM_RIGHTS socket and answers
``loaded``/``load_error``/``forked``/``exited``. Nothing is ever signalled.
"""

import asyncio
import os
import socket
import subprocess
from types import SimpleNamespace

import orjson
import pytest

from myagent.supervisor import zygote_client
from myagent.supervisor.exceptions import AgentFileError, SandboxStartError
from myagent.supervisor.zygote_client import ZygoteClient

from .fakes import run_until


class FakePopen:
    """Records how the zygote would be started and keeps its end of the control socket."""

    started: list["FakePopen"] = []

    def __init__(self, args, *, pass_fds, env, cwd, stdin, start_new_session):
        self.args, self.env, self.cwd, self.new_session = args, env, cwd, start_new_session
        (fd,) = pass_fds
        self.ctrl = socket.socket(fileno=os.dup(fd))  # the zygote's end, as the child would inherit it
        self.pid = 0x7FFF_FFF0
        self.returncode = None
        FakePopen.started.append(self)

    def poll(self):
        return self.returncode

    def wait(self):
        self.returncode = -9
        return self.returncode


@pytest.fixture
def signals(monkeypatch):
    """Replace Popen and os.killpg: no process is started and no pid is signalled."""
    FakePopen.started = []
    sent = []
    monkeypatch.setattr(zygote_client, "subprocess", SimpleNamespace(Popen=FakePopen, DEVNULL=subprocess.DEVNULL))
    monkeypatch.setattr(os, "killpg", lambda pid, sig: sent.append((pid, sig)))
    return sent


@pytest.fixture
async def client(signals):
    exits = []
    zc = ZygoteClient("/srv/agent.py", {"heartbeat": 0.5}, {"PATH": "/usr/bin"}, None,
                      lambda pid, code, sig: exits.append((pid, code, sig)))
    zc.exits = exits  # type: ignore[attr-defined]
    yield zc
    await zc.stop(0)
    for popen in FakePopen.started:
        popen.ctrl.close()


async def readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, 5)
    finally:
        loop.remove_reader(sock.fileno())


async def started(client) -> socket.socket:
    """Start the client; the test zygote answers ``loaded``. Returns the zygote's socket."""
    task = asyncio.ensure_future(client.start(5))
    await run_until(lambda: FakePopen.started)
    zygote = FakePopen.started[-1].ctrl
    zygote.send(orjson.dumps({"op": "loaded", "agent": {"name": "weather"}, "llm": "openai gpt-x"}))
    assert await task == {"name": "weather"}
    return zygote


async def fork_request(zygote: socket.socket) -> tuple[dict, socket.socket]:
    await readable(zygote)
    msg, fds, _, _ = socket.recv_fds(zygote, 65536, 1)
    assert len(fds) == 1
    return orjson.loads(msg), socket.socket(fileno=fds[0])


# Loading ----------------------------------------------------------------------------------------
async def test_start_runs_the_zygote_module_and_returns_the_loaded_agent(client):
    await started(client)
    popen = FakePopen.started[0]
    assert popen.args[1:3] == ["-m", "myagent.sandbox.zygote"]
    args = dict(zip(popen.args[3::2], popen.args[4::2]))
    assert args["--agent-file"] == "/srv/agent.py" and orjson.loads(args["--config"]) == {"heartbeat": 0.5}
    assert int(args["--ctrl-fd"]) >= 0 and popen.env == {"PATH": "/usr/bin"} and popen.new_session
    assert popen.ctrl.type == socket.SOCK_SEQPACKET
    assert client.agent == {"name": "weather"} and client.llm == "openai gpt-x" and client.alive


async def test_load_error_raises_agent_file_error_with_the_reason(client):
    task = asyncio.ensure_future(client.start(5))
    await run_until(lambda: FakePopen.started)
    FakePopen.started[0].ctrl.send(orjson.dumps({"op": "load_error", "reason": "SyntaxError at line 3"}))
    with pytest.raises(AgentFileError, match="SyntaxError at line 3"):
        await task


async def test_a_name_declared_where_the_front_did_not_read_it_is_refused_and_the_zygote_killed(signals):
    zc = ZygoteClient("/srv/agent.py", {}, {"PATH": "/usr/bin", "A_KEY": "a"}, None, lambda *_: None,
                      declared=("A_KEY",))
    task = asyncio.ensure_future(zc.start(5))
    await run_until(lambda: FakePopen.started)
    zygote = FakePopen.started[-1].ctrl
    zygote.send(orjson.dumps({"op": "loaded", "agent": {"name": "a"}, "llm": "", "env": ["A_KEY", "B_TOKEN"]}))
    with pytest.raises(AgentFileError, match=r"^/srv/agent.py declares B_TOKEN in code the server does not run"):
        await task
    assert signals == [(FakePopen.started[-1].pid, 9)] and not zc.alive
    zygote.close()


async def test_a_zygote_that_exits_before_loading_is_an_agent_file_error(client):
    task = asyncio.ensure_future(client.start(5))
    await run_until(lambda: FakePopen.started)
    FakePopen.started[0].ctrl.close()
    with pytest.raises(AgentFileError, match="exited"):
        await task
    assert not client.alive


async def test_a_zygote_that_never_loads_is_killed_after_the_timeout(client, signals):
    with pytest.raises(SandboxStartError, match="longer than"):
        await client.start(0.001)
    assert signals == [(FakePopen.started[0].pid, 9)]


# Forking ----------------------------------------------------------------------------------------
async def test_fork_sends_the_sandbox_socket_and_returns_the_pid_and_the_fronts_end(client):
    zygote = await started(client)
    fork = asyncio.ensure_future(client.fork(5))
    request, sandbox_end = await fork_request(zygote)
    assert request == {"op": "fork", "req": 1}
    zygote.send(orjson.dumps({"op": "forked", "req": 1, "pid": 4242}))
    pid, front_end = await fork
    try:
        assert pid == 4242 and front_end.type == socket.SOCK_STREAM
        sandbox_end.sendall(b"ready")
        assert front_end.recv(5) == b"ready"  # the two ends of one socketpair
    finally:
        front_end.close()
        sandbox_end.close()


async def test_concurrent_forks_are_matched_by_request_id(client):
    zygote = await started(client)
    first = asyncio.ensure_future(client.fork(5))
    second = asyncio.ensure_future(client.fork(5))
    requests = [await fork_request(zygote) for _ in range(2)]
    assert sorted(r["req"] for r, _ in requests) == [1, 2]
    zygote.send(orjson.dumps({"op": "forked", "req": 99, "pid": 1}))  # nobody asked: ignored
    zygote.send(orjson.dumps({"op": "forked", "req": 2, "pid": 2002}))
    zygote.send(orjson.dumps({"op": "forked", "req": 1, "pid": 1001}))
    (pid1, s1), (pid2, s2) = await first, await second
    assert (pid1, pid2) == (1001, 2002)
    for sock in (s1, s2, *(s for _, s in requests)):
        sock.close()


async def test_eof_fails_pending_forks_and_later_ones(client):
    zygote = await started(client)
    fork = asyncio.ensure_future(client.fork(5))
    _, sandbox_end = await fork_request(zygote)
    sandbox_end.close()
    zygote.close()
    with pytest.raises(SandboxStartError, match="zygote exited"):
        await fork
    assert not client.alive
    with pytest.raises(SandboxStartError, match="not running"):
        await client.fork(5)


async def test_a_fork_that_is_not_answered_times_out(client):
    zygote = await started(client)
    with pytest.raises(TimeoutError):
        await client.fork(0.001)
    _, sandbox_end = await fork_request(zygote)
    sandbox_end.close()
    zygote.send(orjson.dumps({"op": "forked", "req": 1, "pid": 7}))  # too late: ignored
    zygote.send(orjson.dumps({"op": "exited", "pid": 7, "code": 0, "signal": None}))
    await run_until(lambda: client.exits)
    assert client.alive


# Exits ------------------------------------------------------------------------------------------
async def test_exited_reports_the_pid_code_and_signal(client):
    zygote = await started(client)
    zygote.send(orjson.dumps({"op": "exited", "pid": 4242, "code": None, "signal": 9}))
    zygote.send(orjson.dumps({"op": "exited", "pid": 4243, "code": 6}))
    await run_until(lambda: len(client.exits) == 2)
    assert client.exits == [(4242, None, 9), (4243, 6, None)]


async def test_stop_closes_the_control_socket(client):
    zygote = await started(client)
    await client.stop(0)
    assert not client.alive
    assert zygote.recv(10) == b""  # the zygote sees EOF and exits
