"""Several agents on one server, with real processes: three agents, one of which crashes its
sandbox at every turn (and, per its --config table, has a restart budget of 1 and no
quarantine, so every crash is charged to its budget).

Shown here: routing by path and 404 before the upgrade, system.connected naming the agent,
isolation of pools and budgets (the crashing agent goes unavailable, the others keep their
sandboxes and answer), per-agent /status and /metrics, sessions bound to their agent (also
across a restart with the SQLite store), and reload of one agent of a served directory
(changed, added, removed) without touching the others.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from myagent.client import ClientError
from tests.serverproc import AGENTS, SCRIPTS, ServerProcess

from .conftest import _check_clean, _stop
from .helpers import wait_for_event

LLM = f"scripted:{SCRIPTS / 'test_script.json'}"
CONFIG = """
[agents.crashy]
max-restarts = 1
quarantine-after = 0

[agents.a]
workers = 2
"""


def start(tmp_path: Path, *targets: str, args: tuple[str, ...] = (), config: str = "") -> ServerProcess:
    if config:
        (tmp_path / "agents.toml").write_text(config)
        args = ("--config", str(tmp_path / "agents.toml"), *args)
    first, *rest = targets
    return ServerProcess(first, *rest, "--workers", "1", *args, llm=LLM).start(timeout=40)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    srv = start(tmp_path_factory.mktemp("three"), f"a={AGENTS / 'test_agent.py'}",
                f"crashy={AGENTS / 'crash_every_turn.py'}", f"probe={AGENTS / 'probe_agent.py'}", config=CONFIG)
    try:
        yield srv
    finally:
        result = _stop(srv)
    _check_clean(srv, *result)


def sections(srv: ServerProcess) -> dict[str, dict]:
    return {s["name"]: s for s in srv.status()["agents"]}


def metric(srv: ServerProcess, name: str, **labels) -> float:
    code, text = srv.get("/metrics")
    assert code == 200
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


async def poll(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_each_agent_at_its_path_and_404_elsewhere(three, open_client):
    for name, declared in (("a", "test-agent"), ("crashy", "crasher"), ("probe", "probe")):
        client = await open_client(f"{three.url}/{name}")
        assert client.connected["metadata"]["agent"] == name
        assert client.connected["metadata"]["agent_name"] == declared
    for path in ("/", "/nope", "/status"):  # / is an agent only while one is served
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(three.url + path):
                pass
        assert info.value.response.status_code == 404
        assert b'"/crashy"' in info.value.response.body


async def test_a_crashing_agent_spends_only_its_own_budget(three, open_client):
    before = sections(three)
    assert before["a"]["limits"]["workers"] == 2 and before["crashy"]["limits"]["workers"] == 1  # --config
    healthy = await (await open_client(f"{three.url}/a")).create_session()
    final, _ = await healthy.ask("hello")
    assert final["event"] == "agent.final_answer"

    crashy = await open_client(f"{three.url}/crashy")
    session = await crashy.create_session()
    for attempt in range(2):  # budget 1: the second crash makes the agent unavailable
        await crashy.send_frame({"event": "user.message", "session_id": session.id,
                                 "content": f"anything {attempt}"})
        interrupted, _ = await wait_for_event(session, "agent.interrupted", timeout=20)
        assert interrupted["metadata"]["reason"] == "SANDBOX_CRASHED"
    code, body = await poll(lambda: r if (r := three.get("/ready"))[0] == 503 else None)
    assert code == 503 and body["reason"].startswith("agent crashy: restart budget exhausted"), body

    after = sections(three)
    assert after["crashy"]["restarts"]["by_reason"] == {"SANDBOX_CRASHED": 2}
    assert after["crashy"]["restarts"]["unavailable_reason"] and not after["crashy"]["sandboxes"]
    for name in ("a", "probe"):  # same sandboxes, same zygote, nothing spent
        assert after[name]["restarts"]["total"] == 0 and after[name]["restarts"]["by_reason"] == {}
        assert [s["pid"] for s in after[name]["sandboxes"]] == [s["pid"] for s in before[name]["sandboxes"]]
        assert after[name]["zygote_pid"] == before[name]["zygote_pid"] and after[name]["ready"] is True
    final, _ = await healthy.ask("still there?")
    assert final["event"] == "agent.final_answer" and "still there?" in final["content"]
    probe = await (await open_client(f"{three.url}/probe")).create_session()
    assert (await probe.ask("hello"))[0]["event"] == "agent.final_answer"
    with pytest.raises(ClientError) as info:
        await crashy.create_session()
    assert info.value.code == "AGENT_UNAVAILABLE"

    assert metric(three, "myagent_ws_sandbox_restarts_total", agent="crashy", reason="SANDBOX_CRASHED") == 2
    assert metric(three, "myagent_ws_agent_unavailable", agent="crashy") == 1
    assert metric(three, "myagent_ws_agent_unavailable", agent="a") == 0
    assert metric(three, "myagent_ws_turns_ended_total", agent="a", event="agent.final_answer") >= 2
    assert metric(three, "myagent_ws_turns_ended_total", agent="crashy", event="agent.final_answer") == 0
    assert metric(three, "myagent_ws_sessions_created_total", agent="probe") >= 1


async def test_a_session_never_resumes_against_another_agent(three, open_client):
    session = await (await open_client(f"{three.url}/a")).create_session()
    other = await open_client(f"{three.url}/probe")
    with pytest.raises(ClientError) as info:
        await other.reconnect(session.id, session.resume_token, 0)
    assert info.value.code == "SESSION_NOT_FOUND"
    same = await open_client(f"{three.url}/a")
    resumed, _ = await same.reconnect(session.id, session.resume_token, 0)
    assert resumed.id == session.id

    # A state export made on one agent is refused by another.
    await same.send_frame({"event": "user.request_state", "session_id": resumed.id})
    exported, _ = await wait_for_event(resumed, "agent.state_exported", 10)
    await other.send_frame({"event": "user.reconnect_with_state", "content": {"state": exported["content"]["state"]}})
    with pytest.raises(ClientError) as info:
        await other._await_pending(10)
    assert info.value.code == "STATE_INVALID" and "another agent" in info.value.event["content"]


async def test_agent_binding_survives_a_restart_with_the_sqlite_store(tmp_path, open_client):
    store = f"sqlite:///{tmp_path / 'sessions.db'}"
    targets = (f"a={AGENTS / 'test_agent.py'}", f"b={AGENTS / 'test_agent.py'}")
    srv = start(tmp_path, *targets, args=("--store", store))
    try:
        session = await (await open_client(f"{srv.url}/a")).create_session()
        assert (await session.ask("remember me"))[0]["event"] == "agent.final_answer"
    finally:
        srv.stop()
    srv = start(tmp_path, *targets, args=("--store", store))
    try:
        with pytest.raises(ClientError) as info:  # the same file, served under another name
            await (await open_client(f"{srv.url}/b")).reconnect(session.id, session.resume_token, 0)
        assert info.value.code == "SESSION_NOT_FOUND"
        resumed, _ = await (await open_client(f"{srv.url}/a")).reconnect(session.id, session.resume_token, 0)
        final, _ = await resumed.ask("and now?")
        assert "Before that: remember me" in final["content"]
    finally:
        srv.stop()


async def test_reload_touches_only_the_changed_agent_of_a_directory(tmp_path, open_client):
    served = tmp_path / "agents"
    served.mkdir()
    for name in ("one", "two", "gone"):
        shutil.copy(AGENTS / "test_agent.py", served / f"{name}.py")
    srv = start(tmp_path, str(served), args=("--reload",))
    try:
        before = sections(srv)
        assert sorted(before) == ["gone", "one", "two"]
        two = await (await open_client(f"{srv.url}/two")).create_session()
        (served / "one.py").write_text((served / "one.py").read_text() + "\n# changed\n")
        (served / "gone.py").unlink()
        shutil.copy(AGENTS / "probe_agent.py", served / "three.py")

        def settled():
            now = sections(srv)
            return now if ("three" in now and "gone" not in now and now["one"]["reload"]["reloads"] == 1
                           and now["one"]["sandboxes"] and now["one"]["zygote_pid"] != before["one"]["zygote_pid"]) \
                else None
        after = await poll(settled, timeout=30)
        assert after, srv.text[-3000:]
        assert after["two"]["reload"]["reloads"] == 0 and after["two"]["zygote_pid"] == before["two"]["zygote_pid"]
        assert [s["pid"] for s in after["two"]["sandboxes"]] == [s["pid"] for s in before["two"]["sandboxes"]]
        assert after["three"]["agent"]["name"] == "probe"
        final, _ = await two.ask("untouched?")  # the session of an untouched agent just goes on
        assert final["event"] == "agent.final_answer"
        client = await open_client(f"{srv.url}/three")
        assert client.connected["metadata"]["agent"] == "three"
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(f"{srv.url}/gone"):
                pass
        assert info.value.response.status_code == 404
    finally:
        srv.stop()


def test_status_command_shows_every_agent(three):
    proc = subprocess.run([sys.executable, "-m", "myagent.cli", "status", three.http], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "220"})
    assert proc.returncode in (0, 1), proc.stderr  # 1 once the crashing agent is unavailable
    assert "3 agents" in proc.stdout
    for name in ("a", "crashy", "probe"):
        assert f"/{name}" in proc.stdout


def test_one_broken_agent_file_stops_the_start_and_leaves_nothing_behind(tmp_path):
    srv = ServerProcess(f"a={AGENTS / 'test_agent.py'}", f"broken={AGENTS / 'chaos_import_error.py'}", "--workers", "1",
                        llm=LLM)
    with pytest.raises(RuntimeError, match="server exited with 2") as info:
        srv.start(timeout=40)
    assert "chaos_import_error.py" in str(info.value)
    assert not [pid for pid in srv.track_children() if psutil.pid_exists(pid)]


def test_bad_agent_arguments_get_one_line(tmp_path):
    (tmp_path / "a.py").write_text("agent = None\n")
    for args, message in ((["a=" + str(tmp_path / "a.py"), "a=" + str(tmp_path / "a.py")], "two agents are named 'a'"),
                          ([str(tmp_path / "a.py"), "--config", str(tmp_path / "none.toml")], "--config")):
        proc = subprocess.run([sys.executable, "-m", "myagent.cli", "server", *args, "--port", "0"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr


async def test_sighup_reloads_the_changed_agent_only_and_every_agent_when_none_changed(tmp_path):
    for name in ("one", "two"):
        shutil.copy(AGENTS / "test_agent.py", tmp_path / f"{name}.py")
    srv = start(tmp_path, str(tmp_path / "one.py"), str(tmp_path / "two.py"))
    try:
        reloads = lambda: {name: s["reload"]["reloads"] for name, s in sections(srv).items()}  # noqa: E731
        (tmp_path / "one.py").write_text((tmp_path / "one.py").read_text() + "\n# changed\n")
        srv.signal(signal.SIGHUP)
        assert await poll(lambda: reloads() == {"one": 1, "two": 0}), reloads()
        srv.signal(signal.SIGHUP)  # nothing changed: a SIGHUP still reloads, as it always did
        assert await poll(lambda: reloads() == {"one": 2, "two": 1}), reloads()
    finally:
        srv.stop()
