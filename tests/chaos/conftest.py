"""Fixtures of the chaos suite: real servers whose sandboxes are killed, capped and starved.

Every test starts its own server (``chaos.start(...)``) with small timings
(``FAST``) so each fault is detected within about two seconds. Teardown closes
the clients first (so the server's drain has nobody to wait for), stops every
server, and then checks what a crash must never leave behind: every pid the
server tree ever had (collected with ``track_children()`` at each step) is
gone, not even a zombie.

Timings measured by the tests (detection and recovery times) go into the
session-wide ``timings`` dict; they are printed at the end of the run and
written to ``artifacts/chaos_timings.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

from myagent.client import AgentClient
from tests.chaos.helpers import CHAOS_AGENT, CHAOS_LLM, FAST, wait_gone
from tests.serverproc import ROOT, ServerProcess

TIMINGS_FILE = ROOT / "artifacts" / "chaos_timings.json"


class Chaos:
    """Starts servers and clients for one test; ``close()`` cleans up and checks for leftovers."""

    def __init__(self) -> None:
        self.servers: list[ServerProcess] = []
        self.clients: list[AgentClient] = []

    def start(self, *args: str, agent: str | Path = CHAOS_AGENT, workers: int = 2,
              env: dict[str, str] | None = None, fast: bool = True, timeout: float = 20.0,
              llm: str = CHAOS_LLM) -> ServerProcess:
        cli = ["--workers", str(workers), *(FAST if fast else ()), *args]
        srv = ServerProcess(agent, *cli, llm=llm, env=env)
        self.servers.append(srv)
        return srv.start(timeout=timeout)

    async def astart(self, *args: str, **kwargs: Any) -> ServerProcess:
        return await asyncio.to_thread(self.start, *args, **kwargs)

    async def client(self, srv: ServerProcess, **kwargs: Any) -> AgentClient:
        client = await AgentClient.connect(srv.url, **kwargs)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception:
                pass
        problems = []
        for srv in self.servers:
            running = srv.proc is not None and srv.proc.poll() is None
            code = await asyncio.to_thread(srv.stop)
            if running and code != 0:  # the chaos must not have broken the front process's own shutdown
                problems.append(f"server exited with {code} on SIGTERM:\n{srv.text[-3000:]}")
            pids = srv.track_children()
            left = await asyncio.to_thread(wait_gone, pids, 3.0)
            if left:
                problems.append(f"processes survived the server (pid, status): {left}\n{srv.text[-3000:]}")
        assert not problems, "\n".join(problems)


@pytest.fixture
async def chaos() -> AsyncIterator[Chaos]:
    c = Chaos()
    try:
        yield c
    finally:
        await c.close()


# Timings ------------------------------------------------------------------------------
_TIMINGS: dict[str, Any] = {}


@pytest.fixture(scope="session")
def timings() -> Iterator[dict[str, Any]]:
    yield _TIMINGS


def _write_timings() -> None:
    if not _TIMINGS:
        return
    TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
    doc = {"written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
           "options": list(FAST), "timings": _TIMINGS}
    TIMINGS_FILE.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TIMINGS:
        return
    _write_timings()
    terminalreporter.section("chaos timings (seconds)")
    for name in sorted(_TIMINGS):
        terminalreporter.write_line(f"{name:48s} {json.dumps(_TIMINGS[name])}")
    terminalreporter.write_line(f"written to {TIMINGS_FILE}")
