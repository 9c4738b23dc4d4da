"""Broken agents: refuse to start, or restart a bounded number of times and then say so."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from myagent.client import ClientError
from tests.chaos.helpers import CHAOS_LLM, FAST, ask_echo, get, place_two, status, wait_gone
from tests.serverproc import AGENTS, ServerProcess

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(30)]

BUDGET = ("--max-restarts", "3", "--restart-window", "60")


@pytest.mark.parametrize("case", ["raises_at_import", "syntax_error", "no_agent"])
def test_broken_agent_file_refuses_to_start_without_a_restart_loop(case: str, tmp_path: Path) -> None:
    if case == "syntax_error":
        agent = tmp_path / "chaos_syntax.py"
        agent.write_text("from myagent import create_react_agent\nagent = create_react_agent(\n")
        expected = "syntax error"
    else:
        agent = AGENTS / ("chaos_import_error.py" if case == "raises_at_import" else "chaos_no_agent.py")
        expected = "RuntimeError: chaos: this agent file fails at import" if case == "raises_at_import" \
            else "defines neither `agent` nor `create_agent()`"
    srv = ServerProcess(agent, "--workers", "2", *FAST, llm=CHAOS_LLM)
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="server exited with 2"):
            srv.start(timeout=15)
        elapsed = time.monotonic() - started
        assert expected in srv.text, srv.text
        # One load attempt, a clear message, no listening socket, no retry.
        assert srv.text.count("Loading agent file") == 1, srv.text
        assert "❌" in srv.text and "listening on" not in srv.text, srv.text
        assert elapsed < 10, elapsed
    finally:
        srv.stop()
    assert not wait_gone(srv.track_children(), 2.0)


async def _wait_unavailable(srv: ServerProcess, timeout: float = 10.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        doc = await status(srv)
        if doc["restarts"]["unavailable_reason"]:
            return doc
        assert loop.time() < deadline, doc["restarts"]
        await asyncio.sleep(0.05)


async def _assert_unavailable(srv: ServerProcess, client) -> dict:
    code, body = await get(srv, "/ready")
    assert code == 503 and body["ready"] is False, (code, body)
    assert "restart budget exhausted" in body["reason"] and "3 restarts" in body["reason"], body
    doc = await status(srv)
    assert doc["restarts"]["unavailable_reason"] == body["reason"], doc["restarts"]
    assert doc["restarts"]["total"] == 3, doc["restarts"]
    with pytest.raises(ClientError) as refused:
        await client.create_session()
    assert refused.value.code == "AGENT_UNAVAILABLE", refused.value.event
    # No restart loop. (The third restart may still be in its 0.2 s backoff when the fourth
    # loss spends the budget: let it land, then nothing new may be forked for a second.)
    await asyncio.sleep(0.5)
    doc = await status(srv)
    before = sorted(s["pid"] for s in doc["sandboxes"])
    await asyncio.sleep(1.0)
    later = await status(srv)
    assert sorted(s["pid"] for s in later["sandboxes"]) == before and later["restarts"]["total"] == 3, later
    return later


async def test_every_session_open_crashes_bounded_restarts_then_unavailable(chaos, timings) -> None:
    """create_agent() works in the zygote but kills every sandbox that opens a session."""
    srv = await chaos.astart(*BUDGET, agent=AGENTS / "chaos_crash_on_open.py")
    client = await chaos.client(srv)
    codes = []
    started = time.monotonic()
    for _ in range(30):
        srv.track_children()
        try:
            await client.create_session()
        except ClientError as exc:
            codes.append(exc.code)
            if exc.code == "AGENT_UNAVAILABLE":
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("a session opened on an agent that crashes on every open")
    assert codes[-1] == "AGENT_UNAVAILABLE", codes
    # 2 sandboxes + 3 restarts: at most 5 opens crashed, each refused with a clear code.
    crashed = [c for c in codes if c != "SERVER_BUSY"][:-1]
    assert len(crashed) == 4 and set(crashed) <= {"INTERNAL_ERROR", "SANDBOX_CRASHED"}, codes
    elapsed = time.monotonic() - started
    await _wait_unavailable(srv)
    await _assert_unavailable(srv, client)
    timings["budget.crash_on_open"] = {"first_open_to_unavailable_s": round(elapsed, 4), "refusals": codes}


async def test_crash_at_every_start_after_loading_exhausts_budget_but_keeps_serving(chaos, timings,
                                                                                   tmp_path: Path) -> None:
    """Sandboxes start fine until a marker appears; then every replacement dies at start."""
    marker = tmp_path / "crash-now"
    srv = await chaos.astart(*BUDGET, agent=AGENTS / "chaos_crash_on_fork.py",
                             env={"MYAGENT_CHAOS_MARKER": str(marker)})
    client = await chaos.client(srv)
    a, pid_a, b, pid_b = await place_two(srv, client)
    await ask_echo(a, "hello one")
    marker.write_text("1")
    killed_at = time.monotonic()
    os.kill(pid_a, signal.SIGKILL)
    interrupted_or_notice = await a.next_event(10)
    assert interrupted_or_notice["event"] == "system.notice", interrupted_or_notice  # idle: no turn to interrupt
    assert interrupted_or_notice["metadata"]["restored"] is True
    doc = await _wait_unavailable(srv)
    exhausted = time.monotonic() - killed_at
    assert doc["restarts"]["by_reason"] == {"SANDBOX_CRASHED": 4}, doc["restarts"]
    later = await _assert_unavailable(srv, client)
    # The sandbox that was already running keeps serving the existing sessions, history intact.
    assert [s["pid"] for s in later["sandboxes"]] == [pid_b], later["sandboxes"]
    assert (await ask_echo(a, "hello two"))["previous"] == "hello one"
    assert (await ask_echo(b, "b one"))["turn"] == 1
    assert not wait_gone([pid_a], 1.0)
    timings["budget.crash_at_start"] = {"kill_to_unavailable_s": round(exhausted, 4)}


async def _exhaust_with_one_worker(chaos, tmp_path: Path):
    """--workers 1: the only sandbox dies and every replacement dies at start."""
    marker = tmp_path / "crash-now"
    agent = tmp_path / "chaos_crash_on_fork.py"  # a copy, so a reload re-imports it from here
    agent.write_text((AGENTS / "chaos_crash_on_fork.py").read_text())
    (tmp_path / "chaos_agent.py").write_text((AGENTS / "chaos_agent.py").read_text())
    srv = await chaos.astart(*BUDGET, agent=agent, workers=1, env={"MYAGENT_CHAOS_MARKER": str(marker)})
    client = await chaos.client(srv)
    a = await client.create_session()
    await ask_echo(a, "hello one")
    pid = (await status(srv))["sandboxes"][0]["pid"]
    marker.write_text("1")
    srv.track_children()
    os.kill(pid, signal.SIGKILL)
    await _wait_unavailable(srv)
    error = await a.next_event(10)
    assert error["event"] == "system.error" and error["metadata"]["error_code"] == "AGENT_UNAVAILABLE", error
    assert isinstance(error.get("seq"), int)  # session-scoped: it is in the session's replay buffer
    return srv, client, a, marker


async def test_no_sandbox_left_the_session_is_told_agent_unavailable(chaos, tmp_path: Path) -> None:
    srv, client, a, marker = await _exhaust_with_one_worker(chaos, tmp_path)
    code, body = await get(srv, "/ready")
    assert code == 503 and "restart budget exhausted" in body["reason"], body
    with pytest.raises(ClientError) as refused:
        await client.create_session()
    assert refused.value.code == "AGENT_UNAVAILABLE"


async def test_no_sandbox_left_the_next_message_is_refused_as_unavailable(chaos, tmp_path: Path) -> None:
    srv, client, a, marker = await _exhaust_with_one_worker(chaos, tmp_path)
    with pytest.raises(ClientError) as refused:
        await a.ask("anyone there?", timeout=5)
    assert refused.value.code == "AGENT_UNAVAILABLE", refused.value.event


async def test_a_successful_reload_ends_the_unavailability(chaos, tmp_path: Path) -> None:
    """The operator fixes the agent and sends SIGHUP: the new version gets a fresh restart budget."""
    srv, client, a, marker = await _exhaust_with_one_worker(chaos, tmp_path)
    marker.unlink()  # "the fix"
    srv.signal(signal.SIGHUP)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (await get(srv, "/ready"))[0] != 200:
        assert loop.time() < deadline, (await status(srv))["restarts"]
        await asyncio.sleep(0.05)
    doc = await status(srv)
    assert doc["reload"]["reloads"] == 1 and doc["restarts"]["unavailable_reason"] is None, doc
    srv.track_children()
    b = await client.create_session()
    assert (await ask_echo(b, "b one"))["turn"] == 1
    # The session whose restore had given up comes back on its next message, history intact.
    for _ in range(50):
        try:
            reply = await ask_echo(a, "a is back")
            break
        except ClientError as busy:
            assert busy.code == "SESSION_BUSY", busy.event
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the abandoned session never came back")
    assert reply["previous"] == "hello one", reply
