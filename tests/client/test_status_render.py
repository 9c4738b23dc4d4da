"""`myagent-ws status` pieces that need no server: URLs, exit codes, rendering."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from myagent.client.status import (EXIT_NOT_READY, EXIT_READY, EXIT_UNREACHABLE, Snapshot, base_url, fetch,
                                   human_bytes, human_seconds, render)


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("ws://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("wss://agent.example.com/", "https://agent.example.com"),
    ("127.0.0.1:9000", "http://127.0.0.1:9000"),
    ("https://example.com/agent/", "https://example.com/agent"),
    ("http://h:1/?token=x", "http://h:1"),
])
def test_base_url(url, expected):
    assert base_url(url) == expected


def test_exit_codes():
    assert Snapshot(ready_code=200, status={}).exit_code == EXIT_READY
    assert Snapshot(ready_code=503, status={}).exit_code == EXIT_NOT_READY
    assert Snapshot(ready_code=None, error="refused").exit_code == EXIT_UNREACHABLE
    assert Snapshot(ready_code=200, error="/status answered HTTP 500").exit_code == EXIT_UNREACHABLE


def test_unreachable_server():
    snap = fetch("http://127.0.0.1:9", timeout=2)  # the discard port: nothing listens there
    assert snap.exit_code == EXIT_UNREACHABLE
    assert "unreachable" in snap.error


def test_human_units():
    assert human_bytes(0) == "0"
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 << 20) == "3.0 MiB"
    assert human_seconds(59) == "59s"
    assert human_seconds(3725) == "1h02m"
    assert human_seconds(None) == "—"


STATUS = {
    "version": "0.1.0", "uptime_seconds": 12.5, "ready": False, "ready_reason": "draining", "draining": True,
    "agent": {"name": "weather", "description": "", "tools": ["get_weather"], "file": "/a.py"},
    "connections": 3, "outbound_queued_bytes": 0,
    "sessions": {"total": 5, "active": 4, "detached": 1, "turns_running": 2},
    "sandboxes": [{"id": 1, "pid": 111, "state": "ready", "sessions": 4, "turns_served": 9, "uptime_seconds": 12.0,
                   "heartbeat_age_seconds": 0.2, "rss_bytes": 900 << 20, "cpu_percent": 35.0, "kill_reason": None}],
    "restarts": {"total": 1, "recent": 1, "by_reason": {"SANDBOX_CRASHED": 1}, "unavailable_reason": None},
    "totals": {"connections_opened": 7, "connections_refused": {}, "sessions_created": 5, "sessions_closed": 0,
               "sessions_restored": 1, "turns_started": 9, "turns_ended": {"agent.final_answer": 7},
               "interrupted_by_reason": {}, "errors_by_code": {"SESSION_BUSY": 2}, "frames_in": 30},
    "latency": {"turn_p50_ms": 12.0, "turn_p99_ms": 250.0, "first_event_p50_ms": 1.5, "first_event_p99_ms": None,
                "samples": 7},
    "limits": {"workers": 1, "sessions_per_worker": 1000, "max_memory": 1 << 30, "max_cpu": 0.0},
}


def test_render_shows_tables_and_the_reason():
    out = io.StringIO()
    console = Console(file=out, width=160, color_system=None)
    console.print(render(Snapshot(ready_code=503, status=STATUS), "http://x:1"))
    text = out.getvalue()
    assert "NOT READY: draining" in text
    assert "weather" in text and "Sandboxes" in text and "Totals" in text
    assert "900.0 MiB" in text and "88%" in text  # RSS against the 1 GiB cap
    assert "SANDBOX_CRASHED 1" in text and "SESSION_BUSY 2" in text
    assert "250 ms" in text


def test_render_unreachable():
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(render(Snapshot(error="x is unreachable"), "x"))
    assert "unreachable" in out.getvalue()


def test_render_several_agents_one_row_each_and_their_sandboxes():
    crashy = {**STATUS, "name": "crashy", "path": "/crashy", "ready": False,
              "ready_reason": "restart budget exhausted: 2 restarts in 60s", "sandboxes": [],
              "restarts": {"total": 2, "recent": 2, "by_reason": {"SANDBOX_CRASHED": 2},
                           "unavailable_reason": "restart budget exhausted: 2 restarts in 60s"}}
    weather = {**STATUS, "name": "weather", "path": "/weather", "ready": True}
    doc = {**STATUS, "ready_reason": "agent crashy: restart budget exhausted: 2 restarts in 60s",
           "agents": [weather, crashy]}
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render(Snapshot(ready_code=503, status=doc), "http://x:1"))
    text = out.getvalue()
    assert "2 agents" in text and "Agents" in text and "NOT READY: agent crashy" in text
    rows = [line for line in text.splitlines() if line.strip().startswith(("weather", "crashy", "/weather", "/crashy"))]
    assert any("/weather" in r and "ready" in r for r in rows) and any("/crashy" in r for r in rows)
    assert "/crashy" in text and "/weather" in text
    # Each agent's sandboxes in a table of their own, under its path.
    weather_part = text.split("Sandboxes of /weather")[1].split("Sandboxes of /crashy")[0]
    crashy_part = text.split("Sandboxes of /crashy")[1].split("Totals")[0]
    assert "111" in weather_part and "no sandbox" in crashy_part and "111" not in crashy_part
    assert "crashy: unavailable" in text and "weather: restarts by reason" in text


def test_several_agents_fit_an_80_column_terminal():
    """Every header and agent path reads whole at 80 columns (rich truncates with an ellipsis)."""
    sections = [{**STATUS, "name": name, "path": "/" + name, "ready": True} for name in ("weather_agent", "notes")]
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(
        render(Snapshot(ready_code=200, status={**STATUS, "agents": sections}), "http://127.0.0.1:8080"))
    text = out.getvalue()
    overview = text.split("Sandboxes")[0]
    assert "…" not in overview, overview
    assert "/weather_agent" in overview and "p50/p99" in overview and "12.0/250 ms" in overview


def test_token_usage_per_model_is_a_total_row():
    usage = {"by_model": [{"agent": "weather", "model": "gpt-4o-mini", "prompt_tokens": 434, "completion_tokens": 14,
                           "total_tokens": 448, "llm_requests": 2, "unknown_requests": 1}]}
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(
        render(Snapshot(ready_code=200, status={**STATUS, "usage": usage}), "http://x:1"))
    assert "LLM tokens (gpt-4o-mini)" in out.getvalue()
    assert "434 prompt / 14 completion · 2 requests · 1 requests without usage" in out.getvalue()
