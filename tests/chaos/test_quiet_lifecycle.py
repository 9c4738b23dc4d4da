"""Normal lifecycle paths leave no traceback and no warning in the server's output.

Regressions: a reload (SIGHUP, --reload) printed a ``BrokenPipeError`` traceback from
the old zygote, whose ``_reap`` reported a sandbox's exit on a control socket the
front had already closed; a SIGTERM while a session was being opened logged
"could not be opened on sandbox N: the sandbox was lost" (and held the connection's
close for 5 s, then "some connections did not close in time").
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from myagent.client import AgentClient, ClientError
from tests.chaos.helpers import ask_echo, status
from tests.integration.helpers import wait_for_event

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

NOISE = ("Traceback", "BrokenPipe", " WARNING ", " ERROR ", "could not be opened")


def noise(srv, since: int) -> list[str]:
    """Lines written after line ``since`` that no normal path should print."""
    return [line for line in srv.text.splitlines()[since:] if any(word in line for word in NOISE)]


async def wait_reloads(srv, count: int, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await status(srv))["reload"]["reloads"] < count:
        assert loop.time() < deadline, (await status(srv))["reload"]
        await asyncio.sleep(0.05)


async def test_twenty_reloads_under_sessions_print_no_traceback(chaos):
    srv = await chaos.astart(workers=2)
    since = len(srv.text.splitlines())  # a host without PID namespaces warns once at start: not ours
    client = await chaos.client(srv)
    sessions = [await client.create_session() for _ in range(4)]
    for i in range(1, 21):
        srv.signal(signal.SIGHUP)
        # Turns run while the old generation is drained and its zygote stopped.
        answers = await asyncio.gather(*(ask_echo(s, f"round {i}") for s in sessions))
        assert all(a["user"] == f"round {i}" for a in answers), answers
        if i % 5 == 0:  # every few rounds, let the reloads land before the next burst
            await wait_reloads(srv, i)
    await wait_reloads(srv, 20)
    doc = await status(srv)
    assert doc["reload"]["last_error"] is None, doc["reload"]
    assert noise(srv, since) == []


async def test_sigterm_under_sessions_is_quiet(chaos):
    """Three SIGTERMs, each with a turn running (its tool blocks the sandbox's loop) and a new
    session's open stuck behind it: the open ends with SHUTTING_DOWN, exit 0, every client is
    told, nothing at warning level."""
    for _ in range(3):
        srv = await chaos.astart("--worker-timeout", "60", workers=1)
        since = len(srv.text.splitlines())
        busy = await chaos.client(srv)
        blocker = await busy.create_session()
        await busy.send_frame({"event": "user.message", "session_id": blocker.id, "content": "do-block now"})
        await wait_for_event(blocker, "agent.tool_call", 10)  # the tool blocking the sandbox's loop runs
        await asyncio.sleep(0.2)
        waiting = await chaos.client(srv)
        opening = asyncio.create_task(waiting.create_session())  # its open waits on that sandbox
        await asyncio.sleep(0.3)
        assert not opening.done()
        srv.signal(signal.SIGTERM)
        with pytest.raises(ClientError) as refused:
            await asyncio.wait_for(opening, 5)
        assert refused.value.code == "SHUTTING_DOWN"
        assert (await asyncio.to_thread(srv.wait, 15)) == 0
        for client in (busy, waiting):
            assert await _drain_notice(client), "no system.notice {draining: true}"
        assert noise(srv, since) == [], srv.text[-3000:]


async def _drain_notice(client: AgentClient) -> dict | None:
    """The draining notice among the connection events received before the close."""
    while not client.system.empty():
        event = client.system.get_nowait()
        if event.get("event") == "system.notice" and event["metadata"].get("draining"):
            return event
    return None
