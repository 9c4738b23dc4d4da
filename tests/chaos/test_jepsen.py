"""Jepsen-style: sessions talk in a loop while a nemesis kill -9s a random sandbox about every second.

Checked for every session, over the whole run:

* every accepted user message gets exactly one terminal event (final_answer
  or interrupted), and it is the last event of its turn; a message is either
  accepted, queued while its session is being restored (agent.message_queued, never an error),
  never lost;
* ``seq`` is gapless over every session-scoped event the client received;
* every final answer answers the message just sent, and names the previous
  message as one the session really sent;
* afterwards every session answers a final message whose reply shows that
  it remembers its previous message (and no more turns than it really had).

Set CHAOS_SEED to replay a run's choice of victims.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass, field

import pytest

from myagent.client import TERMINAL, ClientSession
from tests.chaos.helpers import (assert_gapless, echo, status, wait_gone, wait_ready_sandboxes, zombies)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

WORKERS = 3
CONNECTIONS = 3
SESSIONS_PER_CONNECTION = 5
RUN_SECONDS = 10.0


@dataclass
class History:
    name: str
    session: ClientSession
    accepted: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    queued: int = 0
    notices: int = 0
    # turn_id -> (text, names of its events in order)
    turns: dict[str, tuple[str, list[str]]] = field(default_factory=dict)


async def _wait_restored(h: History) -> None:
    while True:
        event = await h.session.next_event(15)
        _check_not_turn_event(h, event)
        if event["event"] == "system.notice" and event["metadata"].get("restored"):
            h.notices += 1
            return


def _check_not_turn_event(h: History, event: dict) -> None:
    """Between turns only a restore notice may arrive (never a late event of an ended turn)."""
    assert event["event"] == "system.notice", (h.name, event)


async def _talk(h: History, deadline: float) -> None:
    k = 0
    while time.monotonic() < deadline:
        k += 1
        text = f"jepsen {h.name} m{k}"
        await h.session.client.send_frame({"event": "user.message", "session_id": h.session.id, "content": text})
        turn_id = None
        while True:
            event = await h.session.next_event(15)
            name = event["event"]
            meta = event.get("metadata") or {}
            assert name != "system.error", event  # a message is never refused while its session is restored
            if name == "agent.message_queued":
                # The session is being restored: the message waits and runs as the turn named here.
                assert turn_id is None and meta["position"] == 1, event
                h.queued += 1
            if name == "system.notice" and not (turn_id and h.turns[turn_id][1]):
                assert meta.get("restored"), event  # restored before our message ran
                h.notices += 1
                continue
            assert "seq" in event and meta.get("turn_id"), (h.name, event)
            if turn_id is None:
                turn_id = meta["turn_id"]
                assert turn_id not in h.turns, (h.name, event)
                h.accepted.append(text)
                h.turns[turn_id] = (text, [])
            assert meta["turn_id"] == turn_id, (h.name, turn_id, event)
            if name == "agent.message_queued":
                continue
            h.turns[turn_id][1].append(name)
            if name not in TERMINAL:
                continue
            if name == "agent.final_answer":
                reply = echo(event)
                assert reply["user"] == text, (h.name, reply)
                assert reply["previous"] in ("", *h.accepted[:-1]), (h.name, reply)
                h.completed.append(text)
            else:
                assert name == "agent.interrupted" and meta["reason"] == "SANDBOX_CRASHED", event
                h.interrupted.append(text)
                await _wait_restored(h)
            break


async def _nemesis(srv, deadline: float, rng: random.Random) -> list[int]:
    kills = []
    while True:
        await asyncio.sleep(rng.uniform(0.7, 1.3))
        if time.monotonic() > deadline - 0.3:
            return kills
        doc = await status(srv)
        ready = sorted(s["pid"] for s in doc["sandboxes"] if s["state"] == "ready")
        if not ready:
            continue
        victim = rng.choice(ready)
        srv.track_children()
        os.kill(victim, signal.SIGKILL)
        kills.append(victim)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_sessions_survive_random_kill9(store: str, chaos, timings, tmp_path) -> None:
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    store_url = "memory:" if store == "memory" else f"sqlite:///{tmp_path / 'sessions.db'}"
    srv = await chaos.astart("--max-restarts", "200", "--restart-window", "3", "--store", store_url,
                             "--state-dir", str(tmp_path), workers=WORKERS)
    histories: list[History] = []
    for c in range(CONNECTIONS):
        client = await chaos.client(srv)
        for s in range(SESSIONS_PER_CONNECTION):
            histories.append(History(f"c{c}s{s}", await client.create_session()))
    srv.track_children()

    deadline = time.monotonic() + RUN_SECONDS
    kills, *_ = await asyncio.gather(_nemesis(srv, deadline, rng), *(_talk(h, deadline) for h in histories))
    assert len(kills) >= 6, kills

    # Every accepted message: exactly one terminal event, the last of its turn.
    for h in histories:
        assert len(h.turns) == len(h.accepted) == len(h.completed) + len(h.interrupted), h.name
        for turn_id, (text, names) in h.turns.items():
            terminals = [n for n in names if n in TERMINAL]
            assert len(terminals) == 1 and names[-1] in TERMINAL, (h.name, turn_id, text, names)
        assert_gapless(h.session)
        assert h.completed, f"{h.name} never completed a turn"

    # Afterwards: every session answers and remembers its previous message.
    doc = await wait_ready_sandboxes(srv, WORKERS)

    async def final(h: History) -> None:
        terminal, _ = await h.session.ask(f"jepsen final {h.name}", timeout=20)
        reply = echo(terminal)
        last = h.accepted[-1]
        if last in h.completed:
            assert reply["previous"] == last, (h.name, reply, last)
        else:  # interrupted: its message reached the history, or the kill beat it there
            assert reply["previous"] in (last, h.completed[-1] if h.completed else ""), (h.name, reply)
        assert len(h.completed) + 1 <= reply["turn"] <= len(h.accepted) + 1, (h.name, reply, len(h.accepted))

    await asyncio.gather(*(final(h) for h in histories))
    for h in histories:
        assert_gapless(h.session)
    assert doc["restarts"]["by_reason"] == {"SANDBOX_CRASHED": len(kills)}, (doc["restarts"], len(kills))
    assert not await asyncio.to_thread(wait_gone, kills, 2.0)
    assert not zombies(srv.proc.pid)

    stats = {"seed": seed, "kills": len(kills), "sessions": len(histories),
             "turns": sum(len(h.accepted) for h in histories),
             "completed": sum(len(h.completed) for h in histories),
             "interrupted": sum(len(h.interrupted) for h in histories),
             "queued_while_restoring": sum(h.queued for h in histories),
             "restore_notices": sum(h.notices for h in histories)}
    timings[f"jepsen.kill9_every_second.{store}"] = stats
    print(f"\njepsen: {stats}")
