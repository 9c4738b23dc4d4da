"""Process lifecycle: graceful SIGTERM, a second signal, SIGKILL of the front process.

Each test starts (and its fixture always stops) a server of its own.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import psutil
import pytest

from tests.serverproc import alive

from .helpers import assert_turn, create_fails, system_notice, wait_for_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def _tree(srv) -> set[int]:
    """Every process of the server's tree except the front process itself (sandboxes, zygote)."""
    status = srv.status()
    pids = {sb["pid"] for sb in status["sandboxes"]}
    assert status["zygote_pid"], status
    pids.add(status["zygote_pid"])
    pids |= srv.track_children()
    pids.discard(srv.proc.pid)
    assert len(pids) >= 3, pids  # zygote + 2 sandboxes
    assert not set(alive(pids)) ^ pids, "some tracked process is not running"
    return pids


async def _wait_gone(pids: set[int], within: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while alive(pids):
        if loop.time() - started > within:
            raise AssertionError(f"still alive after {within}s: {alive(pids)} "
                                 f"{[psutil.Process(p).cmdline() for p in alive(pids)]}")
        await asyncio.sleep(0.05)
    return loop.time() - started


async def _wait_exit(srv, timeout: float) -> int:
    return await asyncio.to_thread(srv.proc.wait, timeout)


async def test_sigterm_drains_running_turn_then_exits_cleanly(start_server, open_client):
    srv = start_server("--workers", "2")
    client = await open_client(srv.url)
    idle = await open_client(srv.url)
    session = await client.create_session()
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "slow"})
    call, before = await wait_for_event(session, "agent.tool_call", 5)
    pids = await asyncio.to_thread(_tree, srv)
    loop = asyncio.get_running_loop()
    signalled = loop.time()
    start_lines = len(srv.text.splitlines())  # (a host without namespaces warns at start: not ours)
    srv.signal(signal.SIGTERM)

    # /ready fails first (503, draining); /health still answers.
    deadline = loop.time() + 2
    while True:
        code, body = await asyncio.to_thread(srv.get, "/ready")
        if code == 503:
            break
        assert loop.time() < deadline, (code, body)
        await asyncio.sleep(0.05)
    assert body["ready"] is False and body["reason"] == "draining", body
    # Every connection is told, session or not; the log says how long it may take and how to cut it short.
    for who in (client, idle):
        notice = await system_notice(who, "draining", 5)
        assert notice["metadata"]["graceful_timeout"] == 30.0, notice
        assert "session_id" not in notice and "seq" not in notice
    drain_line = next(line for line in srv.text.splitlines() if "draining:" in line)
    assert "1 turns running" in drain_line and "up to 30s (--graceful-timeout)" in drain_line, drain_line
    assert "Ctrl-C again" in drain_line and "second signal" in drain_line, drain_line
    code, _ = await asyncio.to_thread(srv.get, "/health")
    assert code == 200
    status = await asyncio.to_thread(srv.status)
    assert status["draining"] is True
    # New work is refused while draining; the running turn is not disturbed.
    await create_fails(idle, "SHUTTING_DOWN")

    # The running turn completes with its final answer (3 s tool < 30 s graceful timeout).
    rest = [e async for e in session.until_terminal(10)]
    assert_turn(before + rest, session.id)
    assert rest[-1]["content"] == "Finished: slept 3s"
    # Then clients are closed with 1001 (going away) and the server exits 0.
    await asyncio.wait_for(client.closed.wait(), 5)
    await asyncio.wait_for(idle.closed.wait(), 5)
    assert client.ws.close_code == 1001
    assert idle.ws.close_code == 1001
    assert await _wait_exit(srv, 10) == 0
    assert loop.time() - signalled < 10
    await _wait_gone(pids, 2)
    assert "Traceback" not in srv.text
    drained = srv.text.splitlines()[start_lines:]
    assert not [line for line in drained if " WARNING " in line or " ERROR " in line], drained


async def test_sigterm_without_activity_exits_quickly(start_server):
    srv = start_server("--workers", "2")
    pids = await asyncio.to_thread(_tree, srv)
    started = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert await _wait_exit(srv, 10) == 0
    assert time.monotonic() - started < 5
    await _wait_gone(pids, 2)


async def test_second_sigterm_during_drain_exits_at_once(start_server, open_client):
    srv = start_server("--workers", "2")
    client = await open_client(srv.url)
    session = await client.create_session()
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "slow"})
    await wait_for_event(session, "agent.tool_call", 5)
    pids = await asyncio.to_thread(_tree, srv)
    srv.signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2
    while (await asyncio.to_thread(srv.get, "/ready"))[0] != 503:
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    second = loop.time()
    srv.signal(signal.SIGTERM)
    code = await _wait_exit(srv, 5)
    took = loop.time() - second
    assert took < 1.5, took  # well before the 3 s tool would have finished
    assert code != 0
    await _wait_gone(pids, 2)
    # No final answer: the process was gone before the tool finished.
    assert not any(e["event"] == "agent.final_answer" for e in session.history)


async def test_sigkill_of_the_front_process_leaves_no_orphans(start_server, open_client):
    srv = start_server("--workers", "2")
    client = await open_client(srv.url)
    session = await client.create_session()
    # A sandbox busy in a turn must die too.
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "slow"})
    await wait_for_event(session, "agent.tool_call", 5)
    pids = await asyncio.to_thread(_tree, srv)
    srv.signal(signal.SIGKILL)
    assert await _wait_exit(srv, 5) == -signal.SIGKILL
    took = await _wait_gone(pids, 2)
    assert took < 2


def test_sigint_is_graceful_too(start_server):
    srv = start_server("--workers", "1")
    pids = _tree_one(srv)
    srv.signal(signal.SIGINT)
    try:
        assert srv.wait(10) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("server ignored SIGINT")
    deadline = time.monotonic() + 2
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pids)


def _tree_one(srv) -> set[int]:
    status = srv.status()
    pids = {sb["pid"] for sb in status["sandboxes"]} | {status["zygote_pid"]} | srv.track_children()
    pids.discard(srv.proc.pid)
    assert len(pids) >= 2
    return pids
