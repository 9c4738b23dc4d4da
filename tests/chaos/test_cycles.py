"""Many crash-and-restart cycles: no zombie, no leaked fd, no stray process, history intact."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.helpers import (ask_echo, assert_gapless, echo, events_named, num_fds, timed_turn, tree,
                                 wait_fds, wait_gone, wait_ready_sandboxes, zombies)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

CYCLES = 30


async def test_crash_restart_cycles_leak_nothing(chaos, timings) -> None:
    # A short restart window keeps the backoff small: this test is about leaks, not pacing.
    srv = await chaos.astart("--max-restarts", "1000", "--restart-window", "1", "--quarantine-after", "0")
    front = srv.proc.pid
    client = await chaos.client(srv)
    session = await client.create_session()
    await ask_echo(session, "warm up")
    doc = await wait_ready_sandboxes(srv, 2)
    zygote = doc["zygote_pid"]
    front_fds, zygote_fds = num_fds(front), num_fds(zygote)
    killed: set[int] = set()
    cycle_times = []
    for cycle in range(1, CYCLES + 1):
        started = time.monotonic()
        loads = {s["pid"]: s["sessions"] for s in doc["sandboxes"]}
        victim = next(pid for pid, n in loads.items() if n == 1)
        killed.add(victim)
        timed = await timed_turn(session, f"do-exit cycle {cycle}")
        assert [e["event"] for _, e in timed][-1] == "agent.interrupted", timed
        assert timed[-1][1]["metadata"]["reason"] == "SANDBOX_CRASHED"
        notice = await session.next_event(10)
        assert notice["event"] == "system.notice" and notice["metadata"]["restored"] is True, notice
        doc = await wait_ready_sandboxes(srv, 2)
        cycle_times.append(time.monotonic() - started)
        assert victim not in {s["pid"] for s in doc["sandboxes"]}

    # Every killed sandbox is reaped; the tree is the zygote and two sandboxes, no zombie.
    assert not wait_gone(killed, 3.0)
    assert not zombies(front), zombies(front)
    procs = tree(front)
    assert len(procs) == 3, [(p.pid, p.name()) for p in procs]
    assert doc["zygote_pid"] == zygote
    assert await wait_fds(front, front_fds) <= front_fds, (front_fds, num_fds(front))
    assert num_fds(zygote) <= zygote_fds, (zygote_fds, num_fds(zygote))
    assert doc["restarts"]["by_reason"] == {"SANDBOX_CRASHED": CYCLES}, doc["restarts"]

    # The session lived through all of it: one interruption and one restore per cycle, history whole.
    reply = echo((await session.ask("still there?"))[0])
    assert reply["previous"] == f"do-exit cycle {CYCLES}" and reply["turn"] == CYCLES + 2, reply
    assert len(events_named(session, "agent.interrupted")) == CYCLES
    assert len(events_named(session, "system.notice")) == CYCLES
    assert_gapless(session)
    timings["cycles.os_exit"] = {"cycles": CYCLES, "mean_cycle_s": round(sum(cycle_times) / CYCLES, 4),
                                 "max_cycle_s": round(max(cycle_times), 4),
                                 "front_fds": [front_fds, num_fds(front)], "zygote_fds": [zygote_fds, num_fds(zygote)]}


async def test_a_tool_that_opens_files_in_a_loop_hits_its_own_limit(chaos) -> None:
    """RLIMIT_NOFILE is the sandbox's: the tool gets EMFILE, the sandbox survives, and the
    front process (its own descriptors) keeps accepting connections."""
    srv = await chaos.astart("--sandbox-max-files", "256")
    client = await chaos.client(srv)
    session = await client.create_session()
    final, events = await session.ask("do-open-files now")
    result = next(e for e in events if e["event"] == "agent.tool_result")["content"]
    opened = int(result.split()[1])
    assert "Too many open files" in result and opened < 256, result
    assert final["event"] == "agent.final_answer"
    others = [await chaos.client(srv) for _ in range(20)]  # the front is not starved of descriptors
    for other in others:
        await other.create_session()
    assert echo((await session.ask("after"))[0])["previous"] == "do-open-files now"
    assert (await asyncio.to_thread(srv.status))["restarts"]["total"] == 0
