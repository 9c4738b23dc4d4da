"""Every bad `myagent-ws server` input ends with one line on stderr, exit code 2, no traceback,
within a few seconds, and before any sandbox starts.

The real command runs as a subprocess. The agent file of these tests writes a marker file when
it is imported: only the zygote imports it, so a missing marker proves no zygote (hence no
sandbox) ever started; a good start writes it (the control at the end).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serverproc import ROOT, ServerProcess

QUICK = 10.0  # seconds; a refusal takes well under one (the interpreter's start), the bound absorbs a busy CI

AGENT = '''
import pathlib
pathlib.Path(__file__).with_suffix(".loaded").write_text("imported")

from myagent import create_react_agent, tool


@tool
def echo(text: str) -> str:
    """Echo.

    Args:
        text: What to echo.
    """
    return text


agent = create_react_agent(name="marker", tools=[echo], system_prompt="echo", max_steps=2)
'''


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    path = tmp_path / "marker_agent.py"
    path.write_text(AGENT)
    return path


@pytest.fixture(scope="module")
def busy_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("certs")
    paths = {}
    for name in ("a", "b"):
        cert, key = root / f"{name}.crt", root / f"{name}.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", f"/CN={name}"], check=True, capture_output=True)
        paths[name + ".crt"], paths[name + ".key"] = cert, key
    return paths


def run_server(agent: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    environ = {**os.environ, "MYAGENT_WS_STORE": "memory:", "PYTHONUNBUFFERED": "1", **(env or {})}
    environ = {k: v for k, v in environ.items() if v is not None}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "myagent.cli", "server", str(agent), "--host", "127.0.0.1", *args],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def assert_one_line(agent: Path, code: int, out: str, err: str, took: float, *expected: str) -> str:
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and not out, (out, err)
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert took < QUICK, took
    assert not agent.with_suffix(".loaded").exists(), "the agent file was loaded: a zygote started"
    return lines[0]


def test_port_in_use(agent, busy_port):
    line = assert_one_line(agent, *run_server(agent, "--port", str(busy_port)), f"--port {busy_port}",
                           "already in use")
    assert "--port 0" in line or "0 picks a free port" in line


def test_status_port_in_use(agent, busy_port):
    assert_one_line(agent, *run_server(agent, "--port", "0", "--status-port", str(busy_port)),
                    f"--status-port {busy_port}", "already in use")


@pytest.mark.parametrize("args, expected", [
    (("--host", "999.1.1.1"), ("--host 999.1.1.1", "IPv4")),
    (("--host", "10.255.255.1"), ("--host 10.255.255.1", "not an address of this machine")),
    (("--store", "foo://x"), ("--store foo://x", "memory:", "sqlite://", "redis://")),
    (("--store", "sqlite:////proc/no/such/dir/s.db"), ("sqlite:////proc/no/such/dir/s.db",)),
    (("--auth-tokens-file", "/nope"), ("--auth-tokens-file /nope", "no such file")),
    (("--state-secret-file", "/nope"), ("--state-secret-file /nope", "no such file")),
    (("--tls-cert", "/nope.pem"), ("--tls-cert /nope.pem", "no such file")),
    (("--tls-key", "/nope.pem"), ("--tls-key /nope.pem", "no such file")),
    (("--sandbox-dir", "/nope"), ("--sandbox-dir /nope", "no such directory")),
    (("--state-dir", "/proc/nope"), ("--state-dir /proc/nope",)),
    (("--sandbox-user", "no-such-user-15"), ("--sandbox-user no-such-user-15", "no such user")),
    (("--port", "99999"), ("--port 99999", "0 to 65535")),
    (("--port", "eighty"), ("--port eighty", "not an integer")),
    (("--workers", "-1"), ("--workers -1", "out of range")),
    (("--graceful-timeout", "-1"), ("--graceful-timeout -1", ">= 0")),
    (("--turn-timeout", "nan"), ("--turn-timeout nan", "finite")),
    (("--max-memory", "512"), ("--max-memory 512", "512 bytes is too small", "did you mean 512MiB?")),
    (("--max-message-size", "12 parsecs"), ("--max-message-size '12 parsecs'", "not a size")),
    (("--log-format", "xml"), ("--log-format xml", "text, json")),
    (("--trusted-proxy", "proxy.local"), ("--trusted-proxy proxy.local", "not an IP address")),
    (("--worker-timeout", "0.1", "--worker-heartbeat", "0.5"), ("--worker-timeout", "--worker-heartbeat")),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) and v[0].startswith("--") else None)
def test_bad_option(agent, args, expected):
    assert_one_line(agent, *run_server(agent, "--port", "0", *args), *expected)


def test_a_bad_value_from_the_environment_names_the_variable(agent):
    assert_one_line(agent, *run_server(agent, "--port", "0", env={"MYAGENT_WS_MAX_MEMORY": "512"}),
                    "MYAGENT_WS_MAX_MEMORY=512", "did you mean 512MiB?")
    assert_one_line(agent, *run_server(agent, env={"MYAGENT_WS_PORT": "99999"}), "MYAGENT_WS_PORT=99999")
    assert_one_line(agent, *run_server(agent, "--port", "0", env={"MYAGENT_WS_RELOAD": "maybe"}),
                    "MYAGENT_WS_RELOAD=maybe")
    assert_one_line(agent, *run_server(agent, "--port", "0", env={"MYAGENT_WS_TLS_CERT": "/nope.pem"}),
                    "MYAGENT_WS_TLS_CERT=/nope.pem", "no such file")


def test_tls_files_that_do_not_load(agent, certs):
    assert_one_line(agent, *run_server(agent, "--port", "0", "--tls-cert", str(ROOT / "README.md")),
                    "--tls-cert", "not a PEM file")
    assert_one_line(agent, *run_server(agent, "--port", "0", "--tls-cert", str(certs["a.crt"]),
                                       "--tls-key", str(certs["b.key"])),
                    "--tls-key", "does not belong to the certificate")
    assert_one_line(agent, *run_server(agent, "--port", "0", "--tls-cert", str(certs["a.crt"])),
                    "--tls-cert", "--tls-key")  # the key is in a file of its own


def test_help_shows_the_real_types():
    out = subprocess.run([sys.executable, "-m", "myagent.cli", "server", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "COLUMNS": "200"}).stdout
    for option, metavar in [("--port", "INTEGER"), ("--workers", "INTEGER"), ("--max-memory", "SIZE"),
                            ("--graceful-timeout", "SECONDS"), ("--tls-cert", "FILE"), ("--host", "HOST"),
                            ("--store", "URL"), ("--sandbox-dir", "DIRECTORY"), ("--rate-limit", "NUMBER"),
                            ("--log-format", "[text|json]")]:
        assert f"{option} {metavar}" in out, option
    assert "--port TEXT" not in out and "0 to 65535" in out


def test_the_agent_file_is_loaded_when_the_options_are_good(agent):
    """The control of the marker: a good start imports the agent file."""
    server = ServerProcess(agent, "--workers", "1").start(timeout=30)
    try:
        assert agent.with_suffix(".loaded").exists()
    finally:
        server.stop()
