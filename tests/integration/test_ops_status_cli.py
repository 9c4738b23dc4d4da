"""`myagent-ws status [URL]` against a real server: tables, --json, exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def status_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "myagent.cli", "status", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def test_status_tables_exit_0(server):
    result = status_cli(server.http)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "READY" in out and "NOT READY" not in out
    assert "test-agent" in out
    assert "Sandboxes" in out and "Overview" in out and "Totals" in out
    for pid in server.sandbox_pids():
        assert str(pid) in out


def test_status_accepts_a_ws_url(server):
    result = status_cli(server.url)  # ws://127.0.0.1:PORT, as given to `chat`
    assert result.returncode == 0, result.stdout + result.stderr


def test_status_json_passes_the_document_through(server):
    result = status_cli(server.http, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["agent"]["name"] == "test-agent"
    assert doc["ready"] is True
    assert len(doc["sandboxes"]) == 2
    assert set(doc) == set(server.status())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_exits_2():
    url = f"http://127.0.0.1:{free_port()}"
    result = status_cli(url)
    assert result.returncode == 2
    assert "unreachable" in result.stdout
    result = status_cli(url, "--json")
    assert result.returncode == 2
    assert result.stdout == "" and "unreachable" in result.stderr


def test_a_server_that_is_not_myagent_exits_2(server):
    result = status_cli(server.http + "/no/such/prefix")
    assert result.returncode == 2  # /no/such/prefix/ready and /status answer 404


def test_watch_refreshes_until_interrupted(server):
    proc = subprocess.Popen([sys.executable, "-m", "myagent.cli", "status", server.http, "--watch", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]  # one compact document per second
    finally:
        proc.terminate()
        proc.wait(10)
    docs = [json.loads(line) for line in lines]
    assert all(d["agent"]["name"] == "test-agent" for d in docs)
    assert docs[1]["uptime_seconds"] > docs[0]["uptime_seconds"]
