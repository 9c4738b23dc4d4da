"""The clients and commands the docs show, run against live servers.

* docs/clients/client.py and docs/clients/client.js (Node; skipped only when
  `node` is missing) reach the final answer, approve a confirmation, and pass
  a token (Bearer header / ?token=); client.js also runs unchanged in a
  headless Chromium (skipped when Playwright or Chromium is missing).
* docs/quickstart.md's chat client (`myagent-ws chat URL -m ...`) and the
  "real LLM" path (`myagent-ws fake-llm` + OPENAI_BASE_URL) work end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.serverproc import ROOT, ServerProcess

from .conftest import SCRIPTED_LLM, TEST_AGENT

CLIENTS = ROOT / "docs" / "clients"
TOKEN = "doc-client-token"


def run(cmd: list[str], timeout: float = 60.0, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def node_cmd() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    version = run([node, "--version"]).stdout.strip().lstrip("v")
    major = int(version.split(".")[0]) if version[:1].isdigit() else 0
    if major < 20:
        pytest.skip(f"node {version} has no WebSocket (needs 20+)")
    return [node, "--experimental-websocket"] if major < 22 else [node]


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess(TEST_AGENT, "--workers", "1", llm=SCRIPTED_LLM).start(timeout=20)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def auth_server():
    srv = ServerProcess(TEST_AGENT, "--workers", "1", llm=SCRIPTED_LLM,
                        env={"MYAGENT_WS_AUTH_TOKENS": TOKEN}).start(timeout=20)
    yield srv
    srv.stop()


def client_commands() -> list[pytest.param]:
    return [pytest.param("python", id="client.py"), pytest.param("node", id="client.js")]


def command(kind: str) -> list[str]:
    if kind == "python":
        return [sys.executable, str(CLIENTS / "client.py")]
    return [*node_cmd(), str(CLIENTS / "client.js")]


@pytest.mark.parametrize("kind", client_commands())
def test_client_prints_the_streamed_answer_and_tool_steps(server, kind):
    result = run([*command(kind), server.url, "weather in Beijing?"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-> get_weather" in result.stdout and "<- success: Beijing: sunny, 25°C" in result.stdout
    assert "FINAL: The weather is Beijing: sunny, 25°C." in result.stdout


@pytest.mark.parametrize("kind", client_commands())
def test_client_approves_a_confirmation(server, kind):
    result = run([*command(kind), server.url, "do the danger thing"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-> approved" in result.stdout
    assert "FINAL: Outcome: dangerous thing done" in result.stdout


@pytest.mark.parametrize("kind", client_commands())
def test_client_passes_a_token(auth_server, kind):
    # From the environment: a token on the command line is readable by every local user.
    result = run([*command(kind), auth_server.url, "hello"], env={"MYAGENT_WS_TOKEN": TOKEN})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FINAL: You said: hello." in result.stdout
    refused = run([*command(kind), auth_server.url, "hello"], env={"MYAGENT_WS_TOKEN": ""})
    assert refused.returncode != 0


@pytest.mark.parametrize("kind", client_commands())
def test_client_fails_cleanly_without_a_server(kind):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run([*command(kind), f"ws://127.0.0.1:{port}", "hello"], timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_client_js_runs_in_a_browser(server):
    """The same file in a browser page of the server's own origin, as docs/clients/client.js says."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed")
    chromium = os.environ.get("MYAGENT_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Chromium is not installed")
    source = (CLIENTS / "client.js").read_text()
    source = source.replace('"ws://127.0.0.1:8080"', json.dumps(server.url), 1)
    source = source.replace('"Hello!"', json.dumps("do the danger thing"), 1)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page()
            lines: list[str] = []
            page.on("console", lambda msg: lines.append(msg.text))
            page.goto(server.http + "/health")  # same origin, a page without a script policy
            page.add_script_tag(content=source)
            deadline = time.monotonic() + 20
            while not any(line.startswith("\nFINAL:") for line in lines) and time.monotonic() < deadline:
                page.wait_for_timeout(100)
        finally:
            browser.close()
    text = "".join(lines)
    assert "approved" in text and "FINAL: Outcome: dangerous thing done" in text, lines


def test_chat_cli_one_shot(server):
    """docs/quickstart.md: myagent-ws chat URL -m MESSAGE."""
    result = run([sys.executable, "-m", "myagent.cli", "chat", server.url, "-m", "weather in Beijing?"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The weather is Beijing: sunny, 25°C." in result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fake_llm_and_openai_base_url_end_to_end():
    """docs/quickstart.md: `myagent-ws fake-llm --port N` + OPENAI_BASE_URL=http://127.0.0.1:N/v1."""
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "myagent.cli", "fake-llm", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
                break
            except OSError:
                assert fake.poll() is None, fake.stdout.read() if fake.stdout else ""
                assert time.monotonic() < deadline, "fake-llm did not start"
                time.sleep(0.1)
        server = ServerProcess(ROOT / "examples" / "weather_agent.py", "--workers", "1",
                               env={"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "MYAGENT_LLM": ""}).start()
        assert any("OpenAI-compatible model" in line for line in server.output), server.text
        result = run([sys.executable, "-m", "myagent.cli", "chat", server.url, "-m", "Is it sunny?"])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "You said: Is it sunny?" in result.stdout  # fake-llm's default script echoes
    finally:
        if server is not None:
            server.stop()
        fake.terminate()
        fake.wait(10)
