"""Fixtures of the integration suite: real `myagent-ws server` processes on 127.0.0.1.

One server per module (``server``, started with ``server_args``; a module
overrides ``server_args`` to change options), because every start costs about
a second. ``start_server`` starts extra, function-scoped servers for tests
that signal or kill theirs. Every server is stopped in teardown and every
process of its tree is SIGKILLed if still alive.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from myagent.client import AgentClient
from tests.serverproc import AGENTS, SCRIPTS, ServerProcess, alive

from .helpers import assert_valid_server_event

TEST_AGENT = AGENTS / "test_agent.py"
SCRIPTED_LLM = f"scripted:{SCRIPTS / 'test_script.json'}"
DEFAULT_ARGS = ("--workers", "2")


def _start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(TEST_AGENT, *args, llm=SCRIPTED_LLM, env=env).start(timeout=20)


def _stop(srv: ServerProcess) -> tuple[bool, int | None, list[int]]:
    """SIGTERM the server, give its sandboxes 2 s to go, then kill whatever is left.

    Returns (was it still running, its exit code, pids that outlived it by 2 s).
    """
    running = srv.proc is not None and srv.proc.poll() is None
    pids = srv.track_children()
    code = None
    if running:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            code = srv.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 2
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = alive(pids)
    final = srv.stop()  # kills anything left
    return running, code if code is not None else final, leftovers


def _check_clean(srv: ServerProcess, running: bool, code: int | None, leftovers: list[int]) -> None:
    assert running, f"the server died during the tests (exit {srv.proc.returncode}):\n{srv.text[-4000:]}"
    assert code == 0, f"server exited with {code} on SIGTERM:\n{srv.text[-4000:]}"
    assert not leftovers, f"processes outlived the server: {leftovers}"


@pytest.fixture(scope="module")
def server_args() -> tuple[str, ...]:
    return DEFAULT_ARGS


@pytest.fixture(scope="module")
def server(server_args: tuple[str, ...]) -> Iterator[ServerProcess]:
    srv = _start(*server_args)
    try:
        yield srv
    finally:
        result = _stop(srv)
    _check_clean(srv, *result)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start function-scoped servers (for tests that signal or kill them)."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        srv = _start(*(args or DEFAULT_ARGS), env=env)
        started.append(srv)
        return srv

    yield start
    leftovers = [pid for srv in started for pid in _stop(srv)[2]]
    assert not leftovers, f"processes outlived their server: {leftovers}"


@pytest.fixture
async def open_client() -> AsyncIterator[Callable[..., Awaitable[AgentClient]]]:
    """``await open_client(url)``: an AgentClient closed after the test."""
    clients: list[AgentClient] = []

    async def open_(url: str, **kwargs) -> AgentClient:
        client = await AgentClient.connect(url, **kwargs)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        try:
            await client.close()
        except Exception:
            pass
    # Every event any session received validates against the server's published schema.
    for client in clients:
        assert_valid_server_event(client.connected)
        for session in client.sessions.values():
            for event in session.history:
                assert_valid_server_event(event)


@pytest.fixture
async def connect(server: ServerProcess, open_client) -> Callable[..., Awaitable[AgentClient]]:
    """``await connect()``: an AgentClient on the module's server, closed after the test."""

    async def connect_(**kwargs) -> AgentClient:
        return await open_client(server.url, **kwargs)

    return connect_
