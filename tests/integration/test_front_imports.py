"""The front process never imports the agent runtime or the LLM SDK.

A real server is started with an import hook in its (front) interpreter that
refuses ``myagent.agents`` and ``openai``; it must start, serve a turn and stop
cleanly, and it must say which modules it refused (none). The zygote and the
sandboxes are separate interpreters without the hook: they run agent code.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

from myagent.client import AgentClient
from tests.serverproc import AGENTS, ROOT, SCRIPTS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]

GUARDED = ("myagent.agents", "openai", "httpx")

LAUNCHER = f"""
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {{"openai", "httpx"}} or name.startswith("myagent.agents"):
            print(f"REFUSED IMPORT {{name}}", flush=True)
            raise ImportError(f"the front process must not import {{name}}")
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = ["myagent-ws", "server", {str(AGENTS / 'test_agent.py')!r}, "--host", "127.0.0.1", "--port", "0",
            "--workers", "1", "--store", "memory:"]
from myagent.cli import main
main()
"""


async def test_front_process_runs_without_the_agent_runtime():
    env = {"MYAGENT_LLM": f"scripted:{SCRIPTS / 'test_script.json'}", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        port = None
        assert proc.stdout is not None
        while port is None:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, "".join(lines)
            lines.append(line)
            if "listening on ws://" in line:
                port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        client = await AgentClient.connect(f"ws://127.0.0.1:{port}")
        session = await client.create_session()
        final, _ = await session.ask("hello")
        assert final["event"] == "agent.final_answer" and final["content"].startswith("You said: hello.")
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        lines.append(out)
    text = "".join(lines)
    assert proc.returncode == 0, text
    assert "REFUSED IMPORT" not in text, text
