"""--max-turns-per-worker: sandboxes are recycled gracefully; no turn is cut, no history lost."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.chaos.helpers import (ask_echo, assert_gapless, echo, events_named, status, timed_turn, wait_gone,
                                 wait_ready_sandboxes, zombies)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(40)]

ROUNDS = 3


async def test_recycling_never_interrupts_a_turn_and_keeps_history(chaos) -> None:
    # One worker, so both sessions share it: B's turn reaches the limit while A's slow turn runs there.
    srv = await chaos.astart("--max-turns-per-worker", "2", workers=1)
    front = srv.proc.pid
    client = await chaos.client(srv)
    a = await client.create_session()
    b = await client.create_session()
    seen: set[int] = set()
    b_sent: list[str] = []
    for round_ in range(1, ROUNDS + 1):
        doc = await wait_ready_sandboxes(srv, 1)
        hosts = [s for s in doc["sandboxes"] if s["sessions"]]
        assert len(hosts) == 1 and hosts[0]["sessions"] == 2, doc["sandboxes"]  # both moved together
        host = hosts[0]["pid"]
        seen.add(host)
        slow = asyncio.create_task(timed_turn(a, f"do-slow round {round_}"))
        await asyncio.sleep(0.2)  # A's turn is running on `host`
        text = f"b round {round_}"
        reply = await ask_echo(b, text)  # the host's second turn: it starts draining
        assert reply["previous"] == (b_sent[-1] if b_sent else ""), reply
        b_sent.append(text)
        draining = {s["pid"]: s["state"] for s in (await status(srv))["sandboxes"]}
        assert draining.get(host) == "draining", draining
        events = [e for _, e in await slow]
        assert events[-1]["event"] == "agent.final_answer", [e["event"] for e in events]
        assert events[-1]["content"] == "Slow done: slept 1.5s (v1)"
        srv.track_children()
        # The drained sandbox is stopped once A's turn is over and A has moved.
        assert not await asyncio.to_thread(wait_gone, [host], 3.0)

    reply = echo((await a.ask("a final"))[0])
    assert reply["previous"] == f"do-slow round {ROUNDS}" and reply["turn"] == ROUNDS + 1, reply
    reply = await ask_echo(b, "b final")
    assert reply["previous"] == b_sent[-1] and reply["turn"] == ROUNDS + 1, reply
    for session in (a, b):
        assert not events_named(session, "agent.interrupted")
        assert not events_named(session, "system.notice")
        assert_gapless(session)
    doc = await status(srv)
    assert doc["restarts"]["total"] == 0 and not doc["restarts"]["by_reason"], doc["restarts"]
    assert len(seen) == ROUNDS, seen  # a fresh sandbox each round
    assert not zombies(front)
    assert srv.text.count("draining after") >= ROUNDS and srv.text.count("retired") >= ROUNDS, srv.text[-3000:]


async def test_losing_a_draining_sandbox_does_not_grow_the_pool(chaos) -> None:
    """A draining sandbox already has its replacement: its crash must not start one more."""
    srv = await chaos.astart("--max-turns-per-worker", "2", workers=1)
    client = await chaos.client(srv)
    a = await client.create_session()
    b = await client.create_session()
    turn = asyncio.create_task(timed_turn(a, "do-linger now"))
    await asyncio.sleep(0.2)
    await ask_echo(b, "b one")  # the sandbox's second turn: it drains, a replacement starts
    doc = await wait_ready_sandboxes(srv, 1)
    draining = [s["pid"] for s in doc["sandboxes"] if s["state"] == "draining"]
    assert len(draining) == 1, doc["sandboxes"]
    srv.track_children()
    os.kill(draining[0], signal.SIGKILL)  # A's turn runs there
    events = [e for _, e in await turn]
    assert events[-1]["event"] == "agent.interrupted" and events[-1]["metadata"]["reason"] == "SANDBOX_CRASHED"
    notice = await a.next_event(10)
    assert notice["metadata"].get("restored") is True, notice
    assert (await ask_echo(a, "a after"))["previous"] == "do-linger now"
    await asyncio.sleep(1.0)  # give a wrongful respawn (0.05 s backoff) ample time to show up
    doc = await status(srv)
    srv.track_children()
    assert len(doc["sandboxes"]) == 1, f"--workers 1 but {len(doc['sandboxes'])} sandboxes: {doc['sandboxes']}"
    assert not events_named(b, "agent.interrupted")
