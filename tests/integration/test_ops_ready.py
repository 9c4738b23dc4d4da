"""/ready goes 503 when the server must not get traffic: while draining, and once the agent keeps crashing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import wait_for_event
from tests.serverproc import AGENTS, SCRIPTS, ServerProcess, alive

pytestmark = pytest.mark.integration

CRASHY = AGENTS / "ops_crashy.py"
CRASHY_LLM = f"scripted:{SCRIPTS / 'ops_crashy.json'}"


async def poll(srv: ServerProcess, path: str, want: int, timeout: float = 10.0) -> tuple[int, object]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = await asyncio.to_thread(srv.get, path, 2.0)
        if code == want or time.monotonic() > deadline:
            return code, body
        await asyncio.sleep(0.05)


async def test_ready_is_503_while_draining(start_server, open_client):
    srv = start_server("--workers", "1", "--graceful-timeout", "10")
    client = await open_client(srv.url)
    session = await client.create_session()
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "something slow"})
    await wait_for_event(session, "agent.tool_call")  # the 3 s "slow" tool is running
    srv.signal(signal.SIGTERM)
    code, body = await poll(srv, "/ready", 503, timeout=2.5)
    assert code == 503, body
    assert body == {"ready": False, "reason": "draining"}
    code, status = await asyncio.to_thread(srv.get, "/status")
    assert code == 200 and status["draining"] is True and status["ready"] is False
    assert status["sessions"]["turns_running"] == 1
    # /metrics says the same while the turn finishes.
    code, text = await asyncio.to_thread(srv.get, "/metrics")
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["myagent_ws_draining"] == 1 and samples["myagent_ws_ready"] == 0
    # The running turn still completes, then the server exits cleanly.
    final, _ = await wait_for_event(session, "agent.final_answer", timeout=10)
    assert "slept 3" in final["content"]
    assert await asyncio.to_thread(srv.wait, 20) == 0


def status_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "myagent.cli", "status", url, *args], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "COLUMNS": "200"})


async def test_ready_is_503_once_the_restart_budget_is_spent(open_client):
    srv = ServerProcess(CRASHY, "--workers", "1", "--max-restarts", "1", "--restart-window", "60", "--quarantine-after", "0",
                        "--store", "memory:", llm=CRASHY_LLM).start(timeout=20)
    try:
        client = await open_client(srv.url)
        session = await client.create_session()

        # First crash: inside the budget. The turn is interrupted, the session restored, /ready stays 200.
        await client.send_frame({"event": "user.message", "session_id": session.id, "content": "crash now"})
        interrupted, _ = await wait_for_event(session, "agent.interrupted")
        assert interrupted["metadata"]["reason"] == "SANDBOX_CRASHED"
        await wait_for_event(session, "system.notice")  # restored on the replacement sandbox
        code, body = await poll(srv, "/ready", 200)
        assert code == 200, body

        # Second crash: past --max-restarts 1: the agent is unavailable, /ready is 503 for good.
        await client.send_frame({"event": "user.message", "session_id": session.id, "content": "crash again"})
        interrupted, _ = await wait_for_event(session, "agent.interrupted")
        assert interrupted["metadata"]["reason"] == "SANDBOX_CRASHED"
        code, body = await poll(srv, "/ready", 503)
        assert code == 503, body
        assert body["ready"] is False and "restart budget exhausted" in body["reason"]
        await asyncio.sleep(0.5)
        code, body = await asyncio.to_thread(srv.get, "/ready")
        assert code == 503  # and it stays so: no respawn loop

        status = await asyncio.to_thread(srv.status)
        assert status["restarts"]["by_reason"] == {"SANDBOX_CRASHED": 2}
        assert "restart budget exhausted" in status["restarts"]["unavailable_reason"]
        code, text = await asyncio.to_thread(srv.get, "/metrics")
        samples = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "agent"))): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples[("myagent_ws_sandbox_restarts_total", (("reason", "SANDBOX_CRASHED"),))] == 2
        assert samples[("myagent_ws_agent_unavailable", ())] == 1
        assert samples[("myagent_ws_turns_interrupted_total", (("reason", "SANDBOX_CRASHED"),))] == 2

        # The status command reports it and exits 1 (reachable, not ready).
        result = await asyncio.to_thread(status_cli, srv.http)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "NOT READY" in result.stdout and "restart budget exhausted" in result.stdout
    finally:
        srv.stop()
        assert not alive(srv.track_children())
