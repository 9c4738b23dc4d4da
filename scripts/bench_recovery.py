#!/usr/bin/env python3
"""Time from `kill -9` of a sandbox to its sessions answering again on a healthy one.

For each case the script starts a real `myagent-ws server` (the chaos agent,
scripted LLM, 127.0.0.1, ephemeral port), creates sessions until the victim
sandbox hosts N of them (placement is least-loaded; which sandbox took each
session is read from /status), gives every session one turn of history, then
SIGKILLs the victim and measures, per affected session:

* notice   kill -9 -> the session's ``system.notice`` with ``metadata.restored``
* answer   kill -9 -> the final answer to a message sent as soon as the notice
           arrived (the reply must name the message before the kill: history kept)

With ``--workers 2`` the sessions move to the surviving sandbox at once; with
``--workers 1`` they wait for the replacement sandbox (respawn included).

    python scripts/bench_recovery.py [--sessions 1,100] [--workers 2] [--repeat 3] [--json FILE]

The chaos tests import :func:`measure_recovery` from this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from myagent.client import AgentClient, ClientSession  # noqa: E402
from tests.serverproc import AGENTS, SCRIPTS, ServerProcess  # noqa: E402

AGENT = AGENTS / "chaos_agent.py"
LLM = f"scripted:{SCRIPTS / 'chaos.json'}"
SERVER_ARGS = ("--watch-interval", "0.1", "--worker-heartbeat", "0.25", "--kill-grace", "0.5",
               "--graceful-timeout", "1", "--max-restarts", "100", "--rate-limit", "0",
               "--max-sessions-per-address", "0")
SESSIONS_PER_CONNECTION = 50


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {"n": len(ordered), "min": round(ordered[0], 4), "p50": round(statistics.median(ordered), 4),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 4),
            "max": round(ordered[-1], 4)}


async def _loads(srv: ServerProcess) -> dict[int, int]:
    doc = await asyncio.to_thread(srv.status)
    return {s["pid"]: s["sessions"] for s in doc["sandboxes"] if s["state"] == "ready"}


async def _place(srv: ServerProcess, clients: list[AgentClient], on_victim: int, connect: Any,
                 limit: int = 2000) -> tuple[int, list[ClientSession], list[ClientSession]]:
    """Create sessions until one sandbox (the victim) hosts ``on_victim``; return (victim pid, its sessions, others)."""
    by_pid: dict[int, list[ClientSession]] = {}
    before = await _loads(srv)
    for _ in range(limit):
        if not clients or len(clients[-1].sessions) >= SESSIONS_PER_CONNECTION:
            clients.append(await connect())
        session = await clients[-1].create_session()
        after = await _loads(srv)
        host = next(pid for pid, n in after.items() if n > before.get(pid, 0))
        before = after
        by_pid.setdefault(host, []).append(session)
        if len(by_pid[host]) >= on_victim:
            others = [s for pid, group in by_pid.items() if pid != host for s in group]
            return host, by_pid[host], others
    raise RuntimeError(f"no sandbox reached {on_victim} sessions after {limit} creations")


async def measure_recovery(srv: ServerProcess, on_victim: int, connect: Any) -> dict[str, Any]:
    """Kill -9 the sandbox hosting ``on_victim`` sessions; time their notices and first answers.

    ``connect()`` returns a new AgentClient on ``srv`` (the caller closes them all).
    """
    clients: list[AgentClient] = []
    victim, affected, others = await _place(srv, clients, on_victim, connect)
    await asyncio.gather(*(s.ask(f"before kill {i}") for i, s in enumerate(affected)))
    srv.track_children()

    async def recover(index: int, session: ClientSession, killed_at: float) -> tuple[float, float]:
        notice = await session.next_event(30)
        assert notice["event"] == "system.notice" and notice["metadata"].get("restored"), notice
        noticed = time.monotonic()
        terminal, _ = await session.ask("after kill", timeout=30)
        answered = time.monotonic()
        assert terminal["event"] == "agent.final_answer", terminal
        assert f"Before that: before kill {index}." in terminal["content"], terminal["content"]
        return noticed - killed_at, answered - killed_at

    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    results = await asyncio.gather(*(recover(i, s, killed_at) for i, s in enumerate(affected)))
    for session in others:  # the survivors saw nothing
        assert not session.queue.qsize(), [e["event"] for e in session.history[-3:]]
    return {"sessions_on_victim": len(affected), "other_sessions": len(others),
            "notice_s": _stats([r[0] for r in results]), "answer_s": _stats([r[1] for r in results]),
            "all_answered_s": round(max(r[1] for r in results), 4), "clients": clients}


async def _case(workers: int, on_victim: int) -> dict[str, Any]:
    srv = await asyncio.to_thread(ServerProcess(AGENT, "--workers", str(workers), *SERVER_ARGS, llm=LLM).start)
    clients: list[AgentClient] = []
    try:
        result = await measure_recovery(srv, on_victim, lambda: AgentClient.connect(srv.url))
        clients = result.pop("clients")
        return {"workers": workers, **result}
    finally:
        for client in clients:
            await client.close()
        await asyncio.to_thread(srv.stop)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in [int(x) for x in args.sessions.split(",")]:
        for run in range(args.repeat):
            row = await _case(args.workers, n)
            row["run"] = run + 1
            rows.append(row)
            print(f"workers={args.workers} sessions_on_victim={n:4d} run={run + 1}: "
                  f"notice p50 {row['notice_s']['p50'] * 1000:7.1f} ms  "
                  f"answer p50 {row['answer_s']['p50'] * 1000:7.1f} ms  "
                  f"all answered {row['all_answered_s'] * 1000:7.1f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,100", help="sessions on the killed sandbox, comma separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
