"""Secrets an agent file declares reach its tools; nothing else from the server's environment does.

A real server serves tests/fixtures/agents/secrets_agent.py, which declares
``env=["SERPER_API_KEY"]``; the server's environment also holds undeclared
credentials. Its tools report ``os.environ`` and ``/proc/PID/environ`` as a
sandbox sees them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from myagent.client import AgentClient
from tests.serverproc import AGENTS, ROOT, ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

AGENT = AGENTS / "secrets_agent.py"
DECLARED = "serper-declared-0d6f"
UNDECLARED = {"GITHUB_TOKEN": "ghp-undeclared-91c2", "AWS_SECRET_ACCESS_KEY": "aws-undeclared-77aa",
              "MYAGENT_WS_AUTH_TOKENS": "tok-server-own-5e1b"}


def environment(**extra: str) -> dict[str, str]:
    """The test's environment without any SERPER_API_KEY of its own, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "SERPER_API_KEY"}
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "MYAGENT_LLM": "offline", **extra}


async def tool(server: ServerProcess, command: str) -> str:
    async with await AgentClient.connect(server.url, token=UNDECLARED["MYAGENT_WS_AUTH_TOKENS"]) as client:
        _, events = await (await client.create_session()).ask(command)
        return next(e["content"] for e in events if e["event"] == "agent.tool_result")


async def test_declared_secret_reaches_the_tool_and_undeclared_ones_stay_invisible():
    server = ServerProcess(AGENT, "--workers", "1", env={"SERPER_API_KEY": DECLARED, **UNDECLARED},
                           llm="offline").start()
    try:
        assert await tool(server, "/env_value name=SERPER_API_KEY") == DECLARED
        for name in UNDECLARED:
            assert await tool(server, f"/env_value name={name}") == "(unset)"
        own = await tool(server, "/read_environ pid=self")
        assert f"SERPER_API_KEY={DECLARED}" in own
        status = server.status()
        zygote = status["zygote_pid"]
        # The zygote (whose memory every sandbox shares) was started with the same short list. In a
        # PID namespace its pid is not even visible from the sandbox; either way nothing leaks.
        seen_from_sandbox = await tool(server, f"/read_environ pid={zygote}")
        try:
            with open(f"/proc/{zygote}/environ", "rb") as handle:
                zygote_env = handle.read().decode()
        except PermissionError:
            zygote_env = ""
        for text in (own, seen_from_sandbox, zygote_env):
            assert not any(value in text for value in UNDECLARED.values()), text
        if zygote_env:
            assert f"SERPER_API_KEY={DECLARED}" in zygote_env.split("\0")

        # /status: names, never values.
        assert status["agent"]["env"] == ["SERPER_API_KEY"]
        assert "SERPER_API_KEY" in status["sandbox_env"] and "PATH" in status["sandbox_env"]
        assert not set(UNDECLARED) & set(status["sandbox_env"])
        body = server.get("/status")[1]
        assert DECLARED not in str(body) and not any(v in str(body) for v in UNDECLARED.values())

        # The start-up lines: what is passed because declared, what is withheld (once, names only).
        passed = [line for line in server.output if line.startswith("🔑")]
        hints = [line for line in server.output if line.startswith("🔒")]
        assert passed == ["🔑 Passed to sandboxes as the agent file declares: SERPER_API_KEY"]
        assert len(hints) == 1, server.text
        assert "AWS_SECRET_ACCESS_KEY" in hints[0] and "GITHUB_TOKEN" in hints[0]
        assert "--sandbox-env NAME" in hints[0] and 'env=["NAME"]' in hints[0]
        assert "MYAGENT_WS_AUTH_TOKENS" not in hints[0] and "SERPER_API_KEY" not in hints[0]
        assert DECLARED not in server.text and not any(v in server.text for v in UNDECLARED.values())
    finally:
        server.stop()


def test_a_missing_declared_variable_refuses_to_start_in_one_line():
    run = subprocess.run([sys.executable, "-m", "myagent.cli", "server", str(AGENT), "--host", "127.0.0.1",
                          "--port", "0", "--workers", "1", "--store", "memory:"],
                         env=environment(**UNDECLARED), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.splitlines() == [
        f"❌ {AGENT} declares SERPER_API_KEY, not set in the server's environment (or empty): set it "
        "(export SERPER_API_KEY=...) or take it out of the declaration"]
    # Refused before the zygote started: no containment probe, no sandbox, no listening socket.
    assert "containment" not in run.stdout + run.stderr and "sandbox" not in run.stdout
    assert "listening" not in run.stdout


def test_with_several_agents_a_missing_variable_refuses_before_any_agent_loads():
    """Another agent that declares nothing must not start its zygote first (agents load side by side)."""
    other = ROOT / "tests" / "fixtures" / "agents" / "test_agent.py"
    run = subprocess.run([sys.executable, "-m", "myagent.cli", "server", str(other), str(AGENT), "--host",
                          "127.0.0.1", "--port", "0", "--workers", "1", "--store", "memory:"],
                         env=environment(**UNDECLARED), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.splitlines() == [
        f"❌ {AGENT} declares SERPER_API_KEY, not set in the server's environment (or empty): set it "
        "(export SERPER_API_KEY=...) or take it out of the declaration"]
    assert "Loading agent file" not in run.stdout and "sandbox" not in run.stdout


def test_check_reports_declared_names_set_or_missing_never_values():
    def check(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "myagent.cli", "check", str(AGENT)], env=environment(**extra),
                              cwd=ROOT, capture_output=True, text=True, timeout=30)

    ok = check(SERPER_API_KEY=DECLARED)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "   🔑 SERPER_API_KEY: set" in ok.stdout.splitlines() and DECLARED not in ok.stdout + ok.stderr
    missing = check()
    assert missing.returncode == 1
    assert "   🔑 SERPER_API_KEY: missing" in missing.stdout.splitlines()
    assert missing.stderr.splitlines() == [
        "❌ not set here: SERPER_API_KEY; `myagent-ws server` refuses to start without it"]
    assert check(SERPER_API_KEY="").stdout.count("SERPER_API_KEY: empty") == 1


def test_a_name_declared_in_another_module_is_refused_with_the_line_to_write(tmp_path):
    """The front reads the agent file only: a declaration it cannot see would have no value."""
    (tmp_path / "built.py").write_text("from myagent import create_react_agent\n"
                                       "agent = create_react_agent(name='a', env=['SERPER_API_KEY'])\n")
    (tmp_path / "agent.py").write_text("from built import agent\n")
    run = subprocess.run([sys.executable, "-m", "myagent.cli", "server", str(tmp_path / "agent.py"), "--host",
                          "127.0.0.1", "--port", "0", "--workers", "1", "--store", "memory:"],
                         env=environment(SERPER_API_KEY=DECLARED), cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 2, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("❌")]
    assert errors == [f"❌ {tmp_path / 'agent.py'} declares SERPER_API_KEY in code the server does not run before "
                      'starting the sandboxes (a computed list, or another module): write the names out in the '
                      'agent file, env=["SERPER_API_KEY"] or ENV = ["SERPER_API_KEY"]'], run.stderr
    assert "listening" not in run.stdout


async def test_a_reload_reads_the_declaration_again(tmp_path):
    """SIGHUP: a new declaration of a missing variable fails the reload (the old version serves on);
    one of a variable that is set reaches the new sandboxes."""
    agent = tmp_path / "agent.py"
    source = AGENT.read_text()
    agent.write_text(source.replace('env=["SERPER_API_KEY"]', "env=[]"))
    server = ServerProcess(agent, "--workers", "1", env={"SERPER_API_KEY": DECLARED, **UNDECLARED},
                           llm="offline").start()

    async def status_when(done) -> dict:
        for _ in range(400):
            status = server.status()
            if done(status["reload"]):
                return status
            await asyncio.sleep(0.05)
        raise AssertionError(status["reload"])

    try:
        assert await tool(server, "/env_value name=SERPER_API_KEY") == "(unset)"
        assert server.status()["agent"]["env"] == []
        agent.write_text(source.replace('env=["SERPER_API_KEY"]', 'env=["SERPER_API_KEY", "MISSING_API_KEY"]'))
        server.signal(signal.SIGHUP)
        status = await status_when(lambda reload: reload["last_error"])
        assert "declares MISSING_API_KEY, not set" in status["reload"]["last_error"], status["reload"]
        assert status["agent"]["env"] == [] and "SERPER_API_KEY" not in status["sandbox_env"]
        assert await tool(server, "/env_value name=SERPER_API_KEY") == "(unset)"
        agent.write_text(source)
        server.signal(signal.SIGHUP)
        status = await status_when(lambda reload: reload["reloads"] == 1)
        assert status["agent"]["env"] == ["SERPER_API_KEY"] and "SERPER_API_KEY" in status["sandbox_env"]
        assert await tool(server, "/env_value name=SERPER_API_KEY") == DECLARED
    finally:
        server.stop()
