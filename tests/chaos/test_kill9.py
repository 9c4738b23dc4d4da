"""kill -9 of a sandbox from outside: mid-turn, with a tool's child process, and recovery time."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import time
from pathlib import Path

import pytest

from tests.chaos.helpers import (ask_echo, assert_gapless, events_named, host_pid, num_fds, place_two, timed_turn,
                                 wait_fds, wait_gone, wait_ready_sandboxes, zombies)
from tests.serverproc import ROOT

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(40)]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_recovery", ROOT / "scripts" / "bench_recovery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _wait_file(path: Path, timeout: float = 5.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not path.exists():
        assert loop.time() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.02)
    return path.read_text()


async def test_kill9_mid_turn_interrupts_once_restores_and_kills_tool_children(chaos, timings,
                                                                              tmp_path: Path) -> None:
    srv = await chaos.astart(env={"MYAGENT_CHAOS_DIR": str(tmp_path)})
    front = srv.proc.pid
    client = await chaos.client(srv)
    a, pid_a, b, pid_b = await place_two(srv, client)
    await ask_echo(a, "hello one")
    await ask_echo(b, "b hello")
    fds_before = num_fds(front)

    # A's tool starts `sleep 600` and awaits; B runs a 1.5 s tool on the other sandbox.
    a_turn = asyncio.create_task(timed_turn(a, "do-spawn now"))
    b_turn = asyncio.create_task(timed_turn(b, "do-slow now"))
    child = host_pid(pid_a, int(await _wait_file(tmp_path / "child.pid")))  # the tool may see its namespace's pids
    srv.track_children()
    assert child in srv.track_children()
    killed_at = time.monotonic()
    os.kill(pid_a, signal.SIGKILL)

    timed = await a_turn
    names = [e["event"] for _, e in timed]
    assert names.count("agent.interrupted") == 1 and names[-1] == "agent.interrupted", names
    assert "agent.tool_call" in names, names
    assert timed[-1][1]["metadata"]["reason"] == "SANDBOX_CRASHED"
    detection = timed[-1][0] - killed_at
    left = await asyncio.to_thread(wait_gone, [pid_a, child], 2.0)
    assert not left, f"the killed sandbox or its child survived (pid, status): {left}"
    child_gone = time.monotonic() - killed_at

    notice = await a.next_event(10)
    assert notice["event"] == "system.notice" and notice["metadata"]["restored"] is True, notice
    reply = await ask_echo(a, "hello three")
    assert reply["previous"] == "do-spawn now" and reply["turn"] == 3, reply
    answered = time.monotonic() - killed_at

    b_events = [e for _, e in await b_turn]
    assert b_events[-1]["event"] == "agent.final_answer", b_events
    assert b_events[-1]["content"] == "Slow done: slept 1.5s (v1)"
    assert not events_named(b, "agent.interrupted") and not events_named(b, "system.notice")
    assert (await ask_echo(b, "b after"))["previous"] == "do-slow now"

    doc = await wait_ready_sandboxes(srv, 2)
    assert pid_b in {s["pid"] for s in doc["sandboxes"]}
    assert doc["restarts"]["by_reason"] == {"SANDBOX_CRASHED": 1}
    assert not zombies(front), zombies(front)
    assert await wait_fds(front, fds_before) <= fds_before
    assert len(events_named(a, "agent.interrupted")) == 1
    assert_gapless(a)
    assert_gapless(b)
    timings["detect.kill9_mid_turn.SANDBOX_CRASHED"] = {
        "kill_to_interrupted_s": round(detection, 4), "kill_to_tool_child_reaped_s": round(child_gone, 4),
        "kill_to_restored_answer_s": round(answered, 4)}


@pytest.mark.parametrize("workers,on_victim", [(2, 1), (2, 100), (1, 1), (1, 100)],
                         ids=["2workers-1session", "2workers-100sessions", "1worker-1session",
                              "1worker-100sessions"])
async def test_recovery_time_after_kill9(workers: int, on_victim: int, chaos, timings) -> None:
    """kill -9 -> every session of the victim answers again; with 1 worker that includes the respawn."""
    srv = await chaos.astart("--max-restarts", "100", workers=workers)
    result = await _bench().measure_recovery(srv, on_victim, lambda: chaos.client(srv))
    result.pop("clients")
    assert result["sessions_on_victim"] == on_victim
    assert result["all_answered_s"] < (3.0 if on_victim == 1 else 8.0), result
    timings[f"recovery.kill9.{workers}workers.{on_victim}sessions"] = result
    print(f"\nkill -9 with {on_victim} session(s) on the victim, {workers} worker(s): "
          f"notice p50 {result['notice_s']['p50'] * 1000:.1f} ms, "
          f"all answered {result['all_answered_s'] * 1000:.1f} ms")


async def test_kill9_of_the_zygote_takes_its_sandboxes_and_everything_recovers(chaos, timings) -> None:
    """Sandboxes die with their zygote (parent-death signal); a new zygote forks their replacements."""
    srv = await chaos.astart()
    front = srv.proc.pid
    client = await chaos.client(srv)
    a, pid_a, b, pid_b = await place_two(srv, client)
    await ask_echo(a, "hello one")
    await ask_echo(b, "b hello")
    doc = await wait_ready_sandboxes(srv, 2)
    zygote = doc["zygote_pid"]
    fds_before = num_fds(front)

    turn = asyncio.create_task(timed_turn(a, "do-slow now"))
    await asyncio.sleep(0.2)
    killed_at = time.monotonic()
    os.kill(zygote, signal.SIGKILL)
    names = [e["event"] for _, e in await turn]
    assert names[-1] == "agent.interrupted" and names.count("agent.interrupted") == 1, names
    for session in (a, b):
        notice = await session.next_event(15)
        assert notice["event"] == "system.notice" and notice["metadata"]["restored"] is True, notice
    assert (await ask_echo(a, "hello three"))["previous"] == "do-slow now"
    assert (await ask_echo(b, "b two"))["previous"] == "b hello"
    answered = time.monotonic() - killed_at

    doc = await wait_ready_sandboxes(srv, 2)
    assert doc["zygote_pid"] not in (None, zygote), doc["zygote_pid"]
    assert not {pid_a, pid_b} & {s["pid"] for s in doc["sandboxes"]}
    assert not await asyncio.to_thread(wait_gone, [zygote, pid_a, pid_b], 3.0)
    assert not zombies(front)
    assert await wait_fds(front, fds_before) <= fds_before
    assert doc["restarts"]["by_reason"] == {"SANDBOX_CRASHED": 2}, doc["restarts"]
    assert len(events_named(a, "agent.interrupted")) == 1 and not events_named(b, "agent.interrupted")
    assert_gapless(a)
    assert_gapless(b)
    timings["recovery.kill9_zygote"] = {"kill_to_both_sessions_answered_s": round(answered, 4)}
