"""Fixtures of the integration suite: real `myagent-ws server` processes on 127.0.0.1.

One server per module (``server``, started with ``server_args``; a module
overrides ``server_args`` to change options), because every start costs about
a second. ``start_server`` starts extra, function-scoped servers for tests
that signal or kill theirs. Every server is stopped in teardown and every
process of its tree is SIGKILLed if still alive.
"""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from myagent.client import AgentClient
from tests.serverproc import AGENTS, SCRIPTS, ServerProcess, alive

TEST_AGENT = AGENTS / "test_agent.py"
SCRIPTED_LLM = f"scripted:{SCRIPTS / 'test_script.json'}"
DEFAULT_ARGS = ("--workers", "2")


def _start(*args: str) -> ServerProcess:
    return ServerProcess(TEST_AGENT, *args, llm=SCRIPTED_LLM).start(timeout=20)


def _stop(srv: ServerProcess, expect_clean: bool) -> None:
    running = srv.proc is not None and srv.proc.poll() is None
    code = srv.stop()
    leftovers = alive(srv.track_children())
    if expect_clean:
        assert running, f"the server died during the tests (exit {srv.proc.returncode if srv.proc else None}):\n" \
                        + srv.text[-4000:]
        assert code == 0, f"server exited with {code} on SIGTERM:\n{srv.text[-4000:]}"
    assert not leftovers, f"processes survived the server: {leftovers}"


@pytest.fixture(scope="module")
def server_args() -> tuple[str, ...]:
    return DEFAULT_ARGS


@pytest.fixture(scope="module")
def server(server_args: tuple[str, ...]) -> Iterator[ServerProcess]:
    srv = _start(*server_args)
    try:
        yield srv
    finally:
        _stop(srv, expect_clean=True)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start function-scoped servers (for tests that signal or kill them)."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        srv = _start(*(args or DEFAULT_ARGS))
        started.append(srv)
        return srv

    yield start
    for srv in started:
        _stop(srv, expect_clean=False)


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


@pytest.fixture
async def connect(server: ServerProcess, open_client) -> Callable[..., Awaitable[AgentClient]]:
    """``await connect()``: an AgentClient on the module's server, closed after the test."""

    async def connect_(**kwargs) -> AgentClient:
        return await open_client(server.url, **kwargs)

    return connect_
