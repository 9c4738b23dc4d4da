"""Ops endpoints of a real server: /health /ready /status /metrics, pages, --status-port, JSON logs."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from myagent import __version__

from tests.integration.helpers import assert_turn, wait_for_event

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_args() -> tuple[str, ...]:
    return ("--workers", "2", "--status-port", str(free_port()), "--watch-interval", "0.1")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def status_port(server) -> int:
    match = re.search(r"status port: http://[^:]+:(\d+)/", server.text)
    assert match, server.text
    return int(match.group(1))


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    code, headers, body = http_get(base + "/metrics")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    """A sample of the one agent served (every agent series is labelled with its agent)."""
    if name.startswith("myagent_ws_") and not name.startswith("myagent_ws_store_"):
        labels.setdefault("agent", "test_agent")
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_health_ready_status(server):
    code, headers, body = http_get(server.http + "/health")
    assert (code, json.loads(body)) == (200, {"status": "ok"})
    code, _, body = http_get(server.http + "/ready")
    assert (code, json.loads(body)) == (200, {"ready": True, "reason": "ok"})
    code, headers, body = http_get(server.http + "/status")
    assert code == 200 and headers["Content-Type"] == "application/json"
    status = json.loads(body)
    assert status["version"] == __version__
    assert {"version", "uptime_seconds", "ready", "ready_reason", "draining", "agent", "connections",
            "outbound_queued_bytes", "sessions", "sandboxes", "zygote_pid", "reload", "restarts", "totals",
            "latency", "limits"} <= set(status)
    assert len(status["sandboxes"]) == 2
    for sandbox in status["sandboxes"]:
        assert set(sandbox) == {"id", "pid", "state", "sessions", "turns_served", "uptime_seconds",
                                "heartbeat_age_seconds", "rss_bytes", "cpu_percent", "procs", "tasks",
                                "containment", "kill_reason", "kill_rung", "frames_rejected"}
        assert sandbox["state"] == "ready"


async def test_metrics_move_after_a_turn(server, connect):
    before = await asyncio.to_thread(scrape, server.http)
    assert value(before, "myagent_ws_ready") == 1
    assert value(before, "myagent_ws_sandboxes", state="ready") == 2

    client = await connect()
    session = await client.create_session()
    terminal, events = await session.ask("What is the weather?")
    assert_turn(events, session.id)
    await client.send_frame({"event": "user.message", "session_id": "s_nope", "content": "hi"})
    await asyncio.wait_for(client.system.get(), 5)  # the SESSION_NOT_FOUND system.error
    await asyncio.sleep(0.3)  # a watchdog sample (--watch-interval 0.1) of the sandboxes
    after = await asyncio.to_thread(scrape, server.http)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("myagent_ws_connections_opened_total") >= 1
    assert value(after, "myagent_ws_connections") >= 1
    assert delta("myagent_ws_sessions_created_total") >= 1
    assert value(after, "myagent_ws_sessions", state="active") >= 1
    assert delta("myagent_ws_turns_started_total") >= 1
    assert delta("myagent_ws_turns_ended_total", event="agent.final_answer") >= 1
    assert delta("myagent_ws_turn_duration_seconds_count") >= 1
    assert delta("myagent_ws_turn_duration_seconds_sum") > 0
    assert delta("myagent_ws_time_to_first_event_seconds_count") >= 1
    assert delta("myagent_ws_events_sent_total") >= len(events) + 1
    assert delta("myagent_ws_frames_received_total") >= 3
    assert delta("myagent_ws_errors_total", code="SESSION_NOT_FOUND") >= 1
    rss = [v for (name, _), v in after.items() if name == "myagent_ws_sandbox_rss_bytes"]
    assert len(rss) == 2 and all(v > 1_000_000 for v in rss), rss
    assert any(name == "myagent_ws_sandbox_cpu_percent" for name, _ in after)
    assert value(after, "myagent_ws_outbound_queue_bytes") >= 0
    assert value(after, "process_resident_memory_bytes") > 0


async def test_events_sent_counts_closed_connections_too(server, open_client):
    client = await open_client(server.url)
    session = await client.create_session()
    await session.ask("hello")
    before = await asyncio.to_thread(scrape, server.http)
    await client.close()
    await asyncio.sleep(0.3)
    after = await asyncio.to_thread(scrape, server.http)
    # The counter never goes down when a connection (and its own count) goes away.
    assert value(after, "myagent_ws_events_sent_total") >= value(before, "myagent_ws_events_sent_total")
    assert value(after, "myagent_ws_connections_closed_total") > value(before, "myagent_ws_connections_closed_total")


def test_console_and_dashboard_pages(server):
    code, headers, body = http_get(server.http + "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b"static/console.js" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    code, headers, body = http_get(server.http + "/dashboard")
    assert code == 200 and b"static/dashboard.js" in body
    for name in ("console.js", "console.css", "dashboard.js"):
        code, headers, body = http_get(server.http + "/static/" + name)
        assert code == 200 and len(body) > 500, name
    code, _, body = http_get(server.http + "/static/../settings.py")
    assert code == 404


async def test_websocket_still_answers_at_root(server, connect):
    client = await connect()  # an upgrade on "/", next to the console page on the same path
    assert client.connection_id


def test_status_port_serves_ops_endpoints(server):
    base = f"http://127.0.0.1:{status_port(server)}"
    for path in ("/health", "/ready", "/status", "/dashboard", "/static/dashboard.js"):
        code, _, _ = http_get(base + path)
        assert code == 200, path
    code, _, body = http_get(base + "/status")
    assert json.loads(body)["agent"]["name"] == "test-agent"
    assert value(scrape(base), "myagent_ws_ready") == 1
    code, _, _ = http_get(base + "/")
    assert code == 404  # the console talks WebSocket: main port only


async def test_status_port_refuses_websockets(server):
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{status_port(server)}/", open_timeout=5):
            pass
    assert info.value.response.status_code == 404


async def test_json_logs_carry_ids_and_no_bodies(start_server, open_client):
    srv = start_server("--workers", "1", "--log-format", "json", env={"MYAGENT_WS_AUTH_TOKENS": "tok-SECRET-123"})
    client = await open_client(srv.url, token="tok-SECRET-123")
    session = await client.create_session()
    _, events = await session.ask("weather please, marker-BODY-42")
    connection_id = client.connection_id
    await client.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in srv.output if line.startswith("{")]
        if any(r.get("connection_id") == connection_id and "closed" in r["msg"] for r in records):
            break
        await asyncio.sleep(0.1)
    records = [json.loads(line) for line in srv.output if line.startswith("{")]
    assert records, srv.text
    for record in records:
        assert {"ts", "level", "logger", "msg"} <= set(record)
    opened = [r for r in records if r.get("connection_id") == connection_id and "opened" in r["msg"]]
    closed = [r for r in records if r.get("connection_id") == connection_id and "closed" in r["msg"]]
    assert opened and closed, records
    ready = [r for r in records if "ready" in r["msg"] and r.get("sandbox_id") is not None]
    assert ready and ready[0]["pid"] == srv.status()["sandboxes"][0]["pid"]
    assert "marker-BODY-42" not in srv.text
    assert "tok-SECRET-123" not in srv.text
    assert session.resume_token not in srv.text
