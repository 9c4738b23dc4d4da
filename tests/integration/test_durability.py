"""Durable sessions with real processes: kill -9, restart, other nodes, nginx in front.

(a) SQLite file: the server is SIGKILLed mid-turn and restarted on the same file; the
    client reconnects: missed events replayed, the lost turn reported interrupted
    (SERVER_RESTARTED), the conversation goes on with its memory. Stored sessions
    idle past --session-ttl are swept after a restart.
(b) Two nodes on one redis-server: while node A lives, node B refuses the session
    (SESSION_BUSY: A's lease); A is SIGKILLed; the client resumes on B once the lease
    lapses, with its memory.
(c) The same through a real nginx (Debian's) in front of both nodes, configured by
    deploy/nginx.conf.
(d) Redis stopped under a live node: /ready and /status say so, new sessions are
    refused with STORE_UNAVAILABLE, the live session keeps working; Redis back: ready.

Every server, redis-server and nginx runs on 127.0.0.1 and is stopped by pid.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from myagent.client import AgentClient, ClientError
from tests.serverproc import ROOT, ServerProcess, kill_pids
from tests.supervisor.store.redisproc import MISSING as REDIS_MISSING
from tests.supervisor.store.redisproc import RedisServer, free_port
from tests.supervisor.store.redisproc import available as redis_available

from .helpers import assert_seqs, assert_valid_server_event, wait_for_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

LEASE_TTL = 2.0
NGINX = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin")
NGINX_CONF = ROOT / "deploy" / "nginx.conf"

needs_redis = pytest.mark.skipif(not redis_available(), reason=REDIS_MISSING)
needs_redis_py = pytest.mark.skipif(importlib.util.find_spec("redis") is None,
                                    reason="the redis package is not installed (pip install 'redis>=5')")


# Helpers -------------------------------------------------------------------------------

def kill9(srv: ServerProcess) -> None:
    """SIGKILL the front process (its sandboxes are reaped by the fixture's teardown)."""
    srv.signal(signal.SIGKILL)
    srv.wait(5)


async def reconnect_retrying(open_client, url: str, sid: str, token: str, last_seq: int,
                             within: float) -> tuple[AgentClient, object, list[dict], list[str]]:
    """Reconnect, retrying while the session is busy elsewhere (a lease) or the node is unreachable.

    Returns (client, session, replayed events, error codes met on the way)."""
    deadline = time.monotonic() + within
    codes: list[str] = []
    client: AgentClient | None = None
    while True:
        try:
            if client is None or client.closed.is_set():
                client = await open_client(url)
            session, replayed = await client.reconnect(sid, token, last_seq, timeout=5)
            return client, session, replayed, codes
        except ClientError as exc:
            codes.append(exc.code)
            if exc.code != "SESSION_BUSY" or time.monotonic() > deadline:
                raise
        except (OSError, TimeoutError) as exc:  # the balancer had no live node yet
            codes.append(type(exc).__name__)
            client = None
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


def stored_session_ids(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [sid for (sid,) in conn.execute("SELECT id FROM sessions")]


# (a) SQLite: kill -9 and restart ---------------------------------------------------------

async def test_sqlite_kill9_mid_turn_then_restart(start_server, open_client, tmp_path):
    db = tmp_path / "sessions.db"
    args = ("--workers", "1", "--store", f"sqlite://{db}", "--state-dir", str(tmp_path))
    first = start_server(*args)
    client = await open_client(first.url)
    session = await client.create_session()
    final, _ = await session.ask("my name is Ada")
    assert final["content"] == "You said: my name is Ada. Before that: . Turn 1."
    await session.ask("I like tea")
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "slow"})
    call, _ = await wait_for_event(session, "agent.tool_call", 5)  # the tool now sleeps 3 s
    seen = list(session.history)
    await asyncio.sleep(0.3)  # write-behind: the last few milliseconds may be lost to a kill -9
    kill9(first)

    second = start_server(*args)
    assert second.status()["store"]["backend"] == "sqlite"
    last_seq = call["seq"] - 3  # pretend the last three events never reached us
    other = await open_client(second.url)
    resumed_session, replayed = await other.reconnect(session.id, session.resume_token, last_seq)
    missed, interrupted, resumed = replayed[:-2], replayed[-2], replayed[-1]
    # Missed events: exactly those after last_seq, byte for byte what the first server sent.
    assert missed == [e for e in seen if e["seq"] > last_seq]
    assert [e["seq"] for e in missed] == list(range(last_seq + 1, call["seq"] + 1))
    # The turn the dead server was running is reported, once, with its turn_id.
    assert interrupted["event"] == "agent.interrupted"
    assert interrupted["metadata"]["reason"] == "SERVER_RESTARTED"
    assert interrupted["metadata"]["turn_id"] == call["metadata"]["turn_id"]
    assert interrupted["seq"] == call["seq"] + 1
    assert resumed["event"] == "agent.session_resumed"
    assert resumed["metadata"]["turn_running"] is False
    assert resumed["metadata"]["replayed"] == len(missed) + 1
    for event in replayed:
        assert_valid_server_event(event)
    whole = [e for e in seen if e["seq"] <= last_seq] + replayed
    assert_seqs(whole, session.id, 1)

    # The conversation goes on with its memory: every earlier user message is in the history.
    final, events = await resumed_session.ask("what did I say?")
    assert final["event"] == "agent.final_answer"
    assert final["content"] == "You said: what did I say?. Before that: slow. Turn 4."
    assert events[0]["seq"] == resumed["seq"] + 1
    assert second.status()["totals"]["sessions_restored"] == 1


async def test_sqlite_kill9_loses_no_acknowledged_write(start_server, open_client, tmp_path):
    """What the store has acknowledged (/status pending_writes back to 0) survives a kill -9 of the
    front process: every event replays byte for byte. The writer process outlives the front only
    to commit what it was handed, then exits by itself."""
    db = tmp_path / "sessions.db"
    args = ("--workers", "1", "--store", f"sqlite://{db}", "--state-dir", str(tmp_path))
    first = start_server(*args)
    client = await open_client(first.url)
    session = await client.create_session()
    for text in ("one", "two", "three"):
        await session.ask(text)
    seen = list(session.history)
    deadline = time.monotonic() + 5
    while first.status()["store"]["pending_writes"]:  # a condition, not a guess at the flush delay
        assert time.monotonic() < deadline, first.status()["store"]
        await asyncio.sleep(0.01)
    writers = [p for p in psutil.Process(first.proc.pid).children()
               if any("sqlite_writer" in part for part in p.cmdline())]
    assert len(writers) == 1
    kill9(first)
    gone, alive = psutil.wait_procs(writers, timeout=5)
    assert not alive, "the writer did not exit after the front died"

    second = start_server(*args)
    other = await open_client(second.url)
    _, replayed = await other.reconnect(session.id, session.resume_token, 0)
    assert replayed[:-1] == [e for e in seen if "seq" in e]
    assert replayed[-1]["event"] == "agent.session_resumed"


async def test_sqlite_graceful_restart_keeps_sessions(start_server, open_client, tmp_path):
    """SIGTERM (not -9): everything is flushed; the session resumes with nothing to report."""
    db = tmp_path / "sessions.db"
    args = ("--workers", "1", "--store", f"sqlite://{db}", "--state-dir", str(tmp_path))
    first = start_server(*args)
    client = await open_client(first.url)
    session = await client.create_session()
    await session.ask("first")
    await session.ask("second")
    first.signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.wait, 15) == 0  # the loop runs on: the client answers the close
    second = start_server(*args)
    other = await open_client(second.url)
    resumed_session, replayed = await other.reconnect(session.id, session.resume_token, session.last_seq)
    assert [e["event"] for e in replayed] == ["agent.session_resumed"]
    assert replayed[0]["seq"] == session.last_seq + 1
    final, _ = await resumed_session.ask("third")
    assert final["content"] == "You said: third. Before that: second. Turn 3."


async def test_seq_never_goes_back_after_everything_was_acked(start_server, open_client, tmp_path):
    """The record's seq is written at turn boundaries only; events after the last turn (here
    agent.session_resumed), acked and trimmed, must still count when the session is revived."""
    db = tmp_path / "sessions.db"
    args = ("--workers", "1", "--store", f"sqlite://{db}", "--state-dir", str(tmp_path))
    first = start_server(*args)
    client = await open_client(first.url)
    session = await client.create_session()
    await session.ask("one")
    await client.close()
    again = await open_client(first.url)
    resumed_session, replayed = await again.reconnect(session.id, session.resume_token, session.last_seq)
    top = replayed[-1]["seq"]
    await resumed_session.ack(top)  # everything acked: the replay log may be trimmed
    await asyncio.sleep(0.3)
    kill9(first)

    second = start_server(*args)
    other = await open_client(second.url)
    _, replayed = await other.reconnect(session.id, session.resume_token, top)
    assert [e["event"] for e in replayed] == ["agent.session_resumed"]
    assert replayed[0]["seq"] == top + 1, "a seq number the client already saw was used again"


async def test_sqlite_expired_sessions_are_swept_after_restart(start_server, open_client, tmp_path):
    db = tmp_path / "sessions.db"
    base = ("--workers", "1", "--store", f"sqlite://{db}", "--state-dir", str(tmp_path))
    first = start_server(*base)
    client = await open_client(first.url)
    session = await client.create_session()
    await session.ask("remember me")
    await asyncio.sleep(0.3)
    kill9(first)
    assert stored_session_ids(db) == [session.id]

    second = start_server(*base, "--session-ttl", "1")
    deadline = time.monotonic() + 8
    while stored_session_ids(db):  # the store sweep runs every 2 s
        assert time.monotonic() < deadline, "the expired session was not swept from the store"
        await asyncio.sleep(0.2)
    other = await open_client(second.url)
    with pytest.raises(ClientError) as info:
        await other.reconnect(session.id, session.resume_token, session.last_seq)
    assert info.value.code == "SESSION_NOT_FOUND"


async def test_revive_checks_the_token(start_server, open_client, tmp_path):
    db = tmp_path / "sessions.db"
    args = ("--workers", "1", "--store", f"sqlite://{db}", "--state-dir", str(tmp_path))
    first = start_server(*args)
    client = await open_client(first.url)
    session = await client.create_session()
    await session.ask("secret")
    await asyncio.sleep(0.3)
    kill9(first)
    second = start_server(*args)
    other = await open_client(second.url)
    with pytest.raises(ClientError) as info:
        await other.reconnect(session.id, "not-the-token", 0)
    assert info.value.code == "SESSION_NOT_FOUND"
    _, replayed = await other.reconnect(session.id, session.resume_token, session.last_seq)
    assert replayed[-1]["event"] == "agent.session_resumed"


# Redis: two nodes ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip(REDIS_MISSING)
    with RedisServer() as server:
        yield server


def node_args(redis: RedisServer, node: str, tmp_path: Path, prefix: str) -> tuple[str, ...]:
    return ("--workers", "1", "--store", f"{redis.url}?prefix={prefix}", "--lease-ttl", str(LEASE_TTL),
            "--node-id", node, "--state-dir", str(tmp_path))


@needs_redis
@needs_redis_py
async def test_two_nodes_one_redis_failover(start_server, open_client, redis_server, tmp_path):
    prefix = f"fo{os.getpid()}"
    node_a = start_server(*node_args(redis_server, "node-a", tmp_path, prefix))
    node_b = start_server(*node_args(redis_server, "node-b", tmp_path, prefix))
    assert node_a.status()["store"]["backend"] == "redis"
    assert node_b.status()["store"]["node_id"] == "node-b"

    client = await open_client(node_a.url)
    session = await client.create_session()
    await session.ask("my name is Ada")
    await session.ask("I like tea")

    # While A lives, its lease keeps the session off B, longer than one lease ttl (A renews it).
    on_b = await open_client(node_b.url)
    deadline = time.monotonic() + LEASE_TTL * 1.5
    refusals = 0
    while time.monotonic() < deadline:
        with pytest.raises(ClientError) as info:
            await on_b.reconnect(session.id, session.resume_token, session.last_seq)
        assert info.value.code == "SESSION_BUSY"
        refusals += 1
        await asyncio.sleep(0.4)
    assert refusals >= 5
    # ... and A still runs it, undisturbed.
    final, _ = await session.ask("still here")
    assert final["content"] == "You said: still here. Before that: I like tea. Turn 3."
    assert node_b.status()["sessions"]["total"] == 0

    await asyncio.sleep(0.1)
    kill9(node_a)
    killed = time.monotonic()
    _, resumed_session, replayed, codes = await reconnect_retrying(
        open_client, node_b.url, session.id, session.resume_token, session.last_seq, within=LEASE_TTL + 5)
    assert set(codes) <= {"SESSION_BUSY"}
    assert time.monotonic() - killed < LEASE_TTL + 3
    assert [e["event"] for e in replayed] == ["agent.session_resumed"]
    assert replayed[0]["seq"] == session.last_seq + 1
    final, _ = await resumed_session.ask("who am I?")
    assert final["content"] == "You said: who am I?. Before that: still here. Turn 4."
    status = node_b.status()
    assert status["totals"]["sessions_restored"] == 1 and status["sessions"]["total"] == 1


@needs_redis
@needs_redis_py
async def test_a_detached_session_moves_between_live_nodes(start_server, open_client, redis_server, tmp_path):
    """A client whose connection dropped may come back through any node, even while the node
    that served it still runs: an idle detached session's lease is let go at once."""
    prefix = f"mv{os.getpid()}"
    long_lease = ("--lease-ttl", "10")  # the last --lease-ttl wins: far longer than this test waits
    node_a = start_server(*node_args(redis_server, "node-a", tmp_path, prefix), *long_lease)
    node_b = start_server(*node_args(redis_server, "node-b", tmp_path, prefix), *long_lease)
    first = await open_client(node_a.url)
    session = await first.create_session()
    await session.ask("my name is Ada")
    await first.close()  # detached on A; A lets go of the lease

    on_b = await open_client(node_b.url)
    started = time.monotonic()
    _, moved, _, codes = await reconnect_retrying(open_client, node_b.url, session.id, session.resume_token,
                                                  session.last_seq, within=5)
    # At most a brief SESSION_BUSY while A notices the drop; never the 10 s lease running out.
    assert set(codes) <= {"SESSION_BUSY"} and time.monotonic() - started < 3, codes
    final, _ = await moved.ask("I like tea")
    assert final["content"] == "You said: I like tea. Before that: my name is Ada. Turn 2."
    last_seq = moved.last_seq

    # While B serves it, A refuses it (B holds the lease) ...
    back_on_a = await open_client(node_a.url)
    with pytest.raises(ClientError) as busy:
        await back_on_a.reconnect(session.id, session.resume_token, last_seq)
    assert busy.value.code == "SESSION_BUSY"
    # ... and once the client leaves B, A takes it back with what happened on B, not its stale copy.
    await moved.client.close()
    started = time.monotonic()
    _, again, _, _ = await reconnect_retrying(open_client, node_a.url, session.id, session.resume_token,
                                              last_seq, within=5)
    assert time.monotonic() - started < 3
    final, _ = await again.ask("who am I?")
    assert final["content"] == "You said: who am I?. Before that: I like tea. Turn 3."
    await on_b.close()


@needs_redis
@needs_redis_py
async def test_two_nodes_mid_turn_failover_reports_the_lost_turn(start_server, open_client, redis_server,
                                                                 tmp_path):
    prefix = f"mt{os.getpid()}"
    node_a = start_server(*node_args(redis_server, "node-a", tmp_path, prefix))
    node_b = start_server(*node_args(redis_server, "node-b", tmp_path, prefix))
    client = await open_client(node_a.url)
    session = await client.create_session()
    await session.ask("hello")
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "slow"})
    call, _ = await wait_for_event(session, "agent.tool_call", 5)
    await asyncio.sleep(0.2)
    kill9(node_a)
    _, resumed_session, replayed, _ = await reconnect_retrying(
        open_client, node_b.url, session.id, session.resume_token, call["seq"], within=LEASE_TTL + 5)
    assert [e["event"] for e in replayed] == ["agent.interrupted", "agent.session_resumed"]
    assert replayed[0]["metadata"]["reason"] == "SERVER_RESTARTED"
    assert replayed[0]["metadata"]["turn_id"] == call["metadata"]["turn_id"]
    assert replayed[0]["seq"] == call["seq"] + 1
    final, _ = await resumed_session.ask("again")
    assert final["content"] == "You said: again. Before that: slow. Turn 3."


# nginx in front of both nodes -------------------------------------------------------------

def nginx_config(upstreams: list[int], port: int, tmp: Path) -> str:
    """deploy/nginx.conf with this test's upstreams, listen address and file locations."""
    text = NGINX_CONF.read_text()
    servers = re.findall(r"^\s*server node\d+:8080[^;]*;\n", text, flags=re.M)
    assert servers, "deploy/nginx.conf has no `server nodeN:8080` lines to replace"
    options = re.search(r"server node\d+:8080([^;]*);", servers[0]).group(1)
    indent = re.match(r"^(\s*)", servers[0]).group(1)
    text = text.replace("".join(servers), "".join(f"{indent}server 127.0.0.1:{p}{options};\n" for p in upstreams))
    text, count = re.subn(r"^(\s*)listen 8080;", rf"\1listen 127.0.0.1:{port};", text, flags=re.M)
    assert count == 1, "deploy/nginx.conf must have exactly one `listen 8080;`"
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    files = (f"    access_log off;\n    client_body_temp_path {tmp}/body;\n    proxy_temp_path {tmp}/proxy;\n"
             f"    fastcgi_temp_path {tmp}/fastcgi;\n    uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;\n")
    return text.replace("http {\n", "http {\n" + files, 1)


class Nginx:
    def __init__(self, upstreams: list[int], tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(nginx_config(upstreams, self.port, tmp))
        self.proc: subprocess.Popen | None = None
        self.pids: set[int] = set()

    def start(self, timeout: float = 10.0) -> "Nginx":
        cmd = [NGINX, "-e", "stderr", "-c", str(self.conf), "-p", str(self.dir),
               "-g", f"daemon off; pid {self.dir}/nginx.pid; error_log stderr warn;"]
        check = subprocess.run([*cmd[:-2], "-t"], capture_output=True, text=True, timeout=10)
        assert check.returncode == 0, f"nginx -t refused the generated config:\n{check.stderr}"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while True:
            self.pids.add(self.proc.pid)
            try:
                self.pids.update(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not listen in time") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open WebSockets are cut
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        kill_pids(self.pids)


@pytest.fixture
def nginx_factory(tmp_path) -> Iterator:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx)")
    started: list[Nginx] = []

    def make(upstreams: list[int]) -> Nginx:
        directory = tmp_path / f"nginx{len(started)}"
        directory.mkdir()
        proxy = Nginx(upstreams, directory).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@needs_redis
@needs_redis_py
async def test_failover_through_nginx(start_server, open_client, redis_server, nginx_factory, tmp_path):
    prefix = f"ng{os.getpid()}"
    nodes = {"node-a": start_server(*node_args(redis_server, "node-a", tmp_path, prefix)),
             "node-b": start_server(*node_args(redis_server, "node-b", tmp_path, prefix))}
    proxy = nginx_factory([srv.port for srv in nodes.values()])
    status, body = http_get(f"http://127.0.0.1:{proxy.port}/ready")
    assert status == 200 and '"ready": true' in body
    assert http_get(f"http://127.0.0.1:{proxy.port}/status")[0] == 403  # operators' endpoints stay private

    # A browser page served through the proxy passes the same-origin check (Host keeps the port).
    client = await open_client(proxy.url, origin=f"http://127.0.0.1:{proxy.port}")
    session = await client.create_session()
    await session.ask("my name is Ada")
    await session.ask("I like tea")
    serving = [name for name, srv in nodes.items() if srv.status()["sessions"]["total"] == 1]
    assert len(serving) == 1, {name: srv.status()["sessions"] for name, srv in nodes.items()}
    dead, alive_name = serving[0], next(name for name in nodes if name != serving[0])

    kill9(nodes[dead])
    await client.closed.wait()
    _, resumed_session, replayed, codes = await reconnect_retrying(
        open_client, proxy.url, session.id, session.resume_token, session.last_seq, within=LEASE_TTL + 6)
    assert [e["event"] for e in replayed] == ["agent.session_resumed"]
    final, _ = await resumed_session.ask("who am I?")
    assert final["content"] == "You said: who am I?. Before that: I like tea. Turn 3."
    assert nodes[alive_name].status()["totals"]["sessions_restored"] == 1
    # nginx keeps answering plain HTTP from the node that is left.
    assert http_get(f"http://127.0.0.1:{proxy.port}/health")[0] == 200


# Redis down under a live node ---------------------------------------------------------------

@needs_redis
@needs_redis_py
async def test_redis_down_is_reported_and_live_sessions_go_on(start_server, open_client, tmp_path):
    with RedisServer() as redis:
        node = start_server(*node_args(redis, "node-a", tmp_path, "down"))
        client = await open_client(node.url)
        session = await client.create_session()
        await session.ask("before")

        redis.stop()
        deadline = time.monotonic() + 6
        while True:
            code, ready = node.get("/ready")
            if code == 503:
                break
            assert time.monotonic() < deadline, "/ready did not report the store outage"
            await asyncio.sleep(0.1)
        assert "session store" in ready["reason"] and "redis" in ready["reason"]
        store = node.status()["store"]
        assert store["healthy"] is False and "redis" in store["status"]

        # New sessions are refused, visibly ...
        other = await open_client(node.url)
        with pytest.raises(ClientError) as info:
            await other.create_session()
        assert info.value.code == "STORE_UNAVAILABLE"
        # ... while the live one keeps working (its writes wait in the bounded queue).
        final, _ = await session.ask("during")
        assert final["content"] == "You said: during. Before that: before. Turn 2."
        assert node.status()["store"]["pending_writes"] > 0

        redis.start()  # same port, empty
        deadline = time.monotonic() + 8
        while node.get("/ready")[0] != 200:
            assert time.monotonic() < deadline, "/ready did not recover with Redis"
            await asyncio.sleep(0.1)
        assert node.status()["store"]["pending_writes"] == 0
        fresh = await other.create_session()
        final, _ = await fresh.ask("after")
        assert final["event"] == "agent.final_answer"


@needs_redis_py
def test_redis_down_at_start_stops_the_server_with_a_clear_error(tmp_path):
    from tests.integration.conftest import SCRIPTED_LLM, TEST_AGENT

    url = f"redis://127.0.0.1:{free_port()}/0"
    srv = ServerProcess(TEST_AGENT, "--workers", "1", "--store", url, "--state-dir", str(tmp_path), llm=SCRIPTED_LLM)
    try:
        with pytest.raises(RuntimeError) as info:
            srv.start(timeout=15)
        assert srv.proc.returncode not in (0, None)
        assert "cannot reach redis" in str(info.value) and url.split("/0")[0] in str(info.value)
    finally:
        srv.stop()
