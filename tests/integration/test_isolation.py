"""What a sandbox can see: its own directory, a scrubbed environment, and (with
--sandbox-user) no access to the server's secrets."""

import os

import psutil
import pytest

from myagent.client import AgentClient
from tests.serverproc import AGENTS, ServerProcess

SECRET = "tok-never-in-a-sandbox"


async def ask(server: ServerProcess, text: str) -> str:
    async with await AgentClient.connect(server.url, token=SECRET) as client:
        final, events = await (await client.create_session()).ask(text)
        return next(e["content"] for e in events if e["event"] == "agent.tool_result")


async def test_scrubbed_environment_and_own_directory(tmp_path):
    env = {"MYAGENT_WS_AUTH_TOKENS": SECRET, "DATABASE_PASSWORD": "hunter2", "OPENAI_API_KEY": "sk-x"}
    server = ServerProcess(AGENTS / "probe_agent.py", "--workers", "1", "--sandbox-dir", str(tmp_path),
                           llm="offline", env=env).start()
    try:
        result = await ask(server, "/whoami")
        names = result.split("env=")[1].split(",")
        assert "OPENAI_API_KEY" in names and "MYAGENT_LLM" in names
        assert "MYAGENT_WS_AUTH_TOKENS" not in names and "DATABASE_PASSWORD" not in names
        assert f"cwd={tmp_path}/sandbox-" in result
    finally:
        server.stop()


@pytest.mark.skipif(os.getuid() != 0, reason="--sandbox-user needs the server to run as root")
async def test_sandbox_user_cannot_read_the_servers_secrets(tmp_path):
    server = ServerProcess(AGENTS / "probe_agent.py", "--workers", "1", "--sandbox-user", "nobody",
                           "--store", f"sqlite://{tmp_path}/sessions.db", "--state-dir", str(tmp_path),
                           llm="offline", env={"MYAGENT_WS_AUTH_TOKENS": SECRET}).start()
    try:
        children = psutil.Process(server.proc.pid).children(recursive=True)
        # The SQLite store's writer process is the front's own code and keeps its uid (it owns the file).
        writers = [p for p in children if any("sqlite_writer" in part for part in p.cmdline())]
        agents = [p for p in children if p not in writers]
        assert agents and all(p.uids().real == 65534 for p in agents), "zygote and sandboxes drop root"
        assert "uid=65534" in await ask(server, "/whoami")
        paths = [f"/proc/{server.proc.pid}/environ", f"{tmp_path}/sessions.db", f"{tmp_path}/state-secret"]
        paths += [f"/proc/{p.pid}/environ" for p in writers]
        for path in paths:
            result = await ask(server, f"/read_file path={path}")
            # In a PID namespace with its own /proc, the front process is not even visible.
            refused = "Permission denied" in result or (path.startswith("/proc/") and "No such file" in result)
            assert refused and SECRET not in result, (path, result)
    finally:
        server.stop()
