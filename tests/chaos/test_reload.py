"""Rolling reload (--reload file watcher, SIGHUP): running turns finish on the old code,
the next turn runs the new code with the history kept, and a broken file changes nothing."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.chaos.helpers import (CHAOS_AGENT, ask_echo, assert_gapless, events_named, status, timed_turn,
                                 wait_gone, zombies)
from tests.integration.helpers import system_notice

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(40)]

VERSION_LINE = 'REPLY = os.environ.get("MYAGENT_CHAOS_REPLY", "v1")'


def write_version(path: Path, version: str) -> None:
    source = CHAOS_AGENT.read_text()
    assert VERSION_LINE in source
    path.write_text(source.replace(VERSION_LINE, f'REPLY = "{version}"'))


def write_broken(path: Path) -> None:
    path.write_text(CHAOS_AGENT.read_text() + "\nthis is not python (\n")


async def _reload_while_a_turn_runs(srv, chaos, agent_file: Path, trigger) -> dict:
    """Shared scenario: a 3 s turn runs on v1 while the file becomes v2 and a reload is triggered."""
    client = await chaos.client(srv)
    a = await client.create_session()
    b = await client.create_session()
    assert (await ask_echo(a, "hello one"))["turn"] == 1
    assert (await ask_echo(b, "b one"))["turn"] == 1
    before = await status(srv)
    old_zygote = before["zygote_pid"]
    old_sandboxes = [s["pid"] for s in before["sandboxes"]]
    srv.track_children()

    turn = asyncio.create_task(timed_turn(a, "do-linger now"))
    await asyncio.sleep(0.3)
    write_version(agent_file, "v2")
    started = time.monotonic()
    trigger()
    notice = await system_notice(client, "reloaded")
    reload_s = time.monotonic() - started
    assert not turn.done(), "the turn ended before the reload: the test proves nothing"
    doc = await status(srv)
    assert doc["zygote_pid"] != old_zygote and doc["reload"]["reloads"] == 1, doc["reload"]
    srv.track_children()

    events = [e for _, e in await turn]
    assert events[-1]["event"] == "agent.final_answer", [e["event"] for e in events]
    assert events[-1]["content"] == "Linger done: slept 3s (v1)"  # the old code finished its turn
    terminal, _ = await a.ask("do-version please")
    assert terminal["content"] == "Version: v2. Before that: do-linger now.", terminal  # new code, same history
    terminal, _ = await b.ask("do-version too")
    assert terminal["content"] == "Version: v2. Before that: b one.", terminal
    for session in (a, b):
        assert not events_named(session, "agent.interrupted")
        assert_gapless(session)
    # The old generation is gone: its zygote and its sandboxes.
    assert not await asyncio.to_thread(wait_gone, [old_zygote, *old_sandboxes], 3.0)
    assert not zombies(srv.proc.pid)
    return {"client": client, "a": a, "b": b, "notice": notice, "reload_s": reload_s}


async def test_reload_on_file_change_keeps_sessions_and_survives_a_broken_file(chaos, timings,
                                                                                tmp_path: Path) -> None:
    agent_file = tmp_path / "chaos_agent.py"
    shutil.copy(CHAOS_AGENT, agent_file)
    srv = await chaos.astart("--reload", agent=agent_file)
    result = await _reload_while_a_turn_runs(srv, chaos, agent_file, trigger=lambda: None)
    client, a = result["client"], result["a"]

    # A broken version: the reload fails, clients are told, the previous code keeps serving.
    serving = sorted(s["pid"] for s in (await status(srv))["sandboxes"])
    write_broken(agent_file)
    failed = await system_notice(client, "reload_failed")
    assert "syntax error" in failed["metadata"]["reason"], failed
    terminal, _ = await a.ask("do-version again")
    assert terminal["content"] == "Version: v2. Before that: do-version please.", terminal
    doc = await status(srv)
    assert doc["reload"]["reloads"] == 1 and "syntax error" in doc["reload"]["last_error"], doc["reload"]
    assert sorted(s["pid"] for s in doc["sandboxes"]) == serving  # nothing was replaced
    srv.track_children()
    timings["reload.file_watch"] = {"write_to_reloaded_notice_s": round(result["reload_s"], 4)}


async def test_sighup_triggers_the_same_rolling_reload(chaos, timings, tmp_path: Path) -> None:
    agent_file = tmp_path / "chaos_agent.py"
    shutil.copy(CHAOS_AGENT, agent_file)
    srv = await chaos.astart(agent=agent_file)  # no --reload: only the signal reloads
    result = await _reload_while_a_turn_runs(srv, chaos, agent_file,
                                             trigger=lambda: srv.signal(signal.SIGHUP))
    client, b = result["client"], result["b"]
    write_broken(agent_file)
    srv.signal(signal.SIGHUP)
    failed = await system_notice(client, "reload_failed")
    assert "syntax error" in failed["metadata"]["reason"], failed
    terminal, _ = await b.ask("do-version again")
    assert terminal["content"] == "Version: v2. Before that: do-version too.", terminal
    timings["reload.sighup"] = {"signal_to_reloaded_notice_s": round(result["reload_s"], 4)}
