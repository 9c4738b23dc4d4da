"""Attacks on isolation, performed for real: hostile agent code and greedy clients.

Each test attacks a real server on 127.0.0.1 the way issue 12 describes and
checks the defence and that nobody else was harmed:

* a tool writes frames for another session on its pipe (forged answers,
  history and opens): dropped, counted, the forging sandbox replaced;
* a user crashes the sandbox again and again: their session is quarantined,
  the restart budget (and everyone else's service) is untouched;
* one address opens sessions and walks away: capped, oldest detached evicted,
  other addresses unaffected; a full pool says so on /ready;
* histories over the limits: trimmed in bytes, and the session still restores
  after a crash, a reload and a server restart;
* a flood of large messages: the front's memory stays under its ceiling.
"""

from __future__ import annotations

import asyncio
import re
import os
import signal
from pathlib import Path

import psutil
import pytest

from myagent.client import AgentClient, ClientError
from tests.chaos.helpers import CHAOS_AGENT, CHAOS_LLM, FAST, ask_echo, get, status
from tests.serverproc import AGENTS, SCRIPTS, ServerProcess

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

HOSTILE_LLM = f"scripted:{SCRIPTS / 'hostile.json'}"


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_forged_frames_for_another_session_are_dropped_and_the_forger_replaced(tmp_path: Path, timings):
    srv = ServerProcess(AGENTS / "hostile_agent.py", "--workers", "2", "--sessions-per-worker", "1", *FAST,
                        llm=HOSTILE_LLM, env={"MYAGENT_CHAOS_DIR": str(tmp_path)}).start(timeout=20)
    victim_client = await AgentClient.connect(srv.url)
    attacker_client = await AgentClient.connect(srv.url)
    try:
        victim = await victim_client.create_session()
        await ask_echo(victim, "first")
        attacker = await attacker_client.create_session()
        (tmp_path / "victim").write_text(victim.id)
        victim_turn = asyncio.create_task(victim.ask("do-slow"))
        await asyncio.sleep(0.3)  # the victim's turn is running when the forgery arrives
        final, events = await attacker.ask("do-forge", timeout=20)
        # The forger's sandbox was replaced for what it sent; its own turn says why.
        assert final["event"] == "agent.interrupted", events
        assert final["metadata"]["error_code"] == "SANDBOX_MISBEHAVED", final
        victim_final, victim_events = await victim_turn
        assert victim_final["event"] == "agent.final_answer"
        assert victim_final["content"] == "Finished: slept 2s"
        assert not any("PWNED" in str(e.get("content")) for e in victim.history), victim.history
        assert len({e["metadata"]["turn_id"] for e in victim_events}) == 1
        reply = await ask_echo(victim, "after")
        assert reply["previous"] == "do-slow"  # no forged message reached the victim's history
        doc = await status(srv)
        rejected = doc["totals"]["sandbox_frames_rejected"]
        assert rejected.get("session not hosted by this sandbox", 0) >= 10, rejected
        assert doc["restarts"]["by_reason"].get("SANDBOX_MISBEHAVED") == 1, doc["restarts"]
        timings["attack.forged_frames"] = {"rejected": rejected, "victim_answer": victim_final["content"]}
        code, metrics = await get(srv, "/metrics")
        assert re.search(r'myagent_ws_sandbox_frames_rejected_total\{agent="[^"]+",'
                         r'reason="session not hosted by this sandbox"\} [1-9]', metrics), metrics
        # The attacker's session itself lives on, restored on a fresh sandbox.
        await ask_echo(attacker, "still here")
    finally:
        await victim_client.close()
        await attacker_client.close()
        srv.stop()


async def test_a_session_that_keeps_crashing_is_quarantined_and_nobody_else_pays(timings):
    # A tiny restart budget: before, 3 crashes made the agent unavailable for everyone. Now three
    # sessions crash it three times each (9 crashes): each is quarantined, the budget is untouched.
    srv = ServerProcess(CHAOS_AGENT, "--workers", "2", *FAST, "--max-restarts", "3", "--restart-window", "60",
                        llm=CHAOS_LLM).start(timeout=20)
    attacker_client = await AgentClient.connect(srv.url)
    user_client = await AgentClient.connect(srv.url)
    try:
        user = await user_client.create_session()
        crashes = 0
        for _ in range(3):
            attacker = await attacker_client.create_session()
            for _ in range(3):
                final, _ = await attacker.ask("do-exit", timeout=20)
                assert final["metadata"]["error_code"] == "SANDBOX_CRASHED", final
                crashes += 1
                await ask_echo(user, f"after crash {crashes}")  # the bystander keeps its service
            with pytest.raises(ClientError) as info:
                await attacker.ask("do-exit")
            assert info.value.code == "SESSION_QUARANTINED"
            quarantined = [e for e in attacker.history if e["event"] == "system.error" and "seq" in e]
            assert quarantined and quarantined[-1]["metadata"]["error_code"] == "SESSION_QUARANTINED"
        code, _ = await get(srv, "/ready")
        assert code == 200
        doc = await status(srv)
        assert doc["restarts"]["unavailable_reason"] is None and doc["restarts"]["recent"] == 0, doc["restarts"]
        assert doc["totals"]["sessions_quarantined"] == 3
        timings["attack.crash_loop"] = {"crashes": crashes, "max_restarts": 3, "ready": code == 200,
                                        "quarantined": 3, "restarts_recent": doc["restarts"]["recent"]}
        new = await user_client.create_session()
        await ask_echo(new, "a new user is served")
    finally:
        await attacker_client.close()
        await user_client.close()
        srv.stop()


async def test_one_address_cannot_fill_the_server():
    srv = ServerProcess(CHAOS_AGENT, "--workers", "1", "--sessions-per-worker", "20", "--max-sessions-per-address",
                        "5", "--trusted-proxy", "127.0.0.1", *FAST, llm=CHAOS_LLM).start(timeout=20)
    greedy = {"X-Forwarded-For": "203.0.113.7"}
    try:
        first = await AgentClient.connect(srv.url, headers=greedy)
        ids = [(await first.create_session()).id for _ in range(5)]
        with pytest.raises(ClientError) as info:  # all five attached: nothing to evict
            await first.create_session()
        assert info.value.code == "TOO_MANY_SESSIONS"
        await first.close()  # walks away: its five sessions stay, detached, for --session-ttl
        await until(lambda: _detached(srv, 5), what="five detached sessions")
        second = await AgentClient.connect(srv.url, headers=greedy)
        for _ in range(5):
            await second.create_session()  # each evicts the oldest detached one
        doc = await status(srv)
        assert doc["sessions"]["total"] == 5 and doc["totals"]["sessions_evicted"] == 5, doc["sessions"]
        other = await AgentClient.connect(srv.url, headers={"X-Forwarded-For": "198.51.100.9"})
        session = await other.create_session()  # another address is not affected
        await ask_echo(session, "hello")
        evicted = await AgentClient.connect(srv.url, headers=greedy)
        with pytest.raises(ClientError) as info:
            await evicted.reconnect(ids[0], "x", 0)
        assert info.value.code == "SESSION_NOT_FOUND"
        for client in (second, other, evicted):
            await client.close()
    finally:
        srv.stop()


async def _detached(srv: ServerProcess, count: int) -> bool:
    return (await status(srv))["sessions"]["detached"] == count


async def test_a_full_pool_is_not_ready_and_grows_on_demand():
    srv = ServerProcess(CHAOS_AGENT, "--workers", "1", "--sessions-per-worker", "1", "--max-sandboxes", "3",
                        *FAST, llm=CHAOS_LLM).start(timeout=20)
    client = await AgentClient.connect(srv.url)
    try:
        assert "growing to 3 sandboxes on demand" in srv.text
        sessions = [await client.create_session() for _ in range(3)]  # two sandboxes spawned on demand
        assert len((await status(srv))["sandboxes"]) == 3
        for i, session in enumerate(sessions):
            await ask_echo(session, f"s{i}")
        code, body = await get(srv, "/ready")
        assert code == 503 and "no room" in body["reason"], body
        with pytest.raises(ClientError) as info:
            await client.create_session()
        assert info.value.code == "SERVER_BUSY"
        for session in sessions[1:]:
            await session.close()
        await until(lambda: _sandboxes(srv, 1), timeout=15, what="extra sandboxes stopped once idle")
        code, _ = await get(srv, "/ready")
        assert code == 200
    finally:
        await client.close()
        srv.stop()


async def _sandboxes(srv: ServerProcess, count: int) -> bool:
    return len([s for s in (await status(srv))["sandboxes"] if s["state"] == "ready"]) == count


async def test_histories_over_the_limits_still_restore(tmp_path: Path):
    """30 KB messages against a 64 KiB history bound: trimmed in bytes; the session survives a
    crash, a reload and a server restart (the store revives it) with what was kept."""
    args = ("--workers", "1", *FAST, "--max-history-bytes", "64KiB", "--store", f"sqlite:///{tmp_path}/s.db")
    srv = ServerProcess(CHAOS_AGENT, *args, llm=CHAOS_LLM).start(timeout=20)
    client = await AgentClient.connect(srv.url)
    try:
        session = await client.create_session()
        big = ["%d %s" % (i, "x" * 30_000) for i in range(6)]
        for text in big:
            await ask_echo(session, text)
        final, _ = await session.ask("do-exit")  # crash: restored with the trimmed history
        assert final["metadata"]["error_code"] == "SANDBOX_CRASHED"
        reply = await ask_echo(session, "after the crash")
        assert reply["previous"] == "do-exit"
        os.kill(srv.proc.pid, signal.SIGHUP)  # reload: moved to a fresh sandbox with its history
        await until(lambda: _reloaded(srv), what="the reload")
        reply = await ask_echo(session, "after the reload")
        assert reply["previous"] == "after the crash"
        token, sid, last = session.resume_token, session.id, session.last_seq
    finally:
        await client.close()
        srv.stop()
    srv = ServerProcess(CHAOS_AGENT, *args, llm=CHAOS_LLM).start(timeout=20)  # restart: revived from the store
    client = await AgentClient.connect(srv.url)
    try:
        session, _ = await client.reconnect(sid, token, last)
        reply = await ask_echo(session, "after the restart")
        assert reply["previous"] == "after the reload"
    finally:
        await client.close()
        srv.stop()


async def _reloaded(srv: ServerProcess) -> bool:
    return (await status(srv))["reload"]["reloads"] >= 1


async def test_a_flood_of_large_messages_stays_under_the_memory_ceiling(timings):
    """20 connections send 99 KB messages as fast as turns end; the echo model answers each in kind
    (one 99 KB partial answer, one 99 KB final answer).
    Per session the front keeps at most --max-history-bytes + --replay-buffer-bytes (256 KiB each
    here), so 20 sessions may add ~10 MiB; before the byte bounds each kept ~0.7 MB per turn."""
    srv = ServerProcess(CHAOS_AGENT, "--workers", "2", "--max-history-bytes", "256KiB", "--replay-buffer-bytes",
                        "256KiB", "--rate-limit", "0", llm=f"scripted:{SCRIPTS / 'flood.json'}").start(timeout=20)
    front = psutil.Process(srv.proc.pid)
    clients = [await AgentClient.connect(srv.url, max_size=16 << 20) for _ in range(20)]
    try:
        sessions = [await c.create_session() for c in clients]
        await asyncio.gather(*(ask_echo(s, "warm up") for s in sessions))
        baseline = front.memory_info().rss

        async def flood(session, n: int) -> None:
            for i in range(n):
                await ask_echo(session, f"{i} " + "y" * 99_000)

        await asyncio.gather(*(flood(s, 15) for s in sessions))  # 300 turns, ~90 MB through the front
        grown = front.memory_info().rss - baseline
        ceiling = 20 * (256 << 10) * 2 + (40 << 20)  # the bounds, plus allocator and buffer slack
        timings["attack.flood_99kb_messages"] = {"turns": 300, "front_rss_growth_mib": grown >> 20,
                                                 "ceiling_mib": ceiling >> 20}
        assert grown < ceiling, f"front RSS grew {grown >> 20} MiB (ceiling {ceiling >> 20} MiB)"
        doc = await status(srv)
        assert doc["ready"]
    finally:
        for c in clients:
            await c.close()
        srv.stop()
