"""Claims of the docs that only a real server can check (writing-agents.md, "The scripted model")."""

from __future__ import annotations

import pytest

from tests.serverproc import AGENTS, ROOT, SCRIPTS, ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]

RELATIVE_SCRIPT = "scripted:tests/fixtures/scripts/test_script.json"


@pytest.fixture
def serve(monkeypatch):
    """Start servers from the repository root (a relative path is relative to it); stop them after."""
    monkeypatch.chdir(ROOT)
    started: list[ServerProcess] = []

    def start(agent, llm: str | None = None) -> ServerProcess:
        srv = ServerProcess(agent, "--workers", "1", llm=llm)
        started.append(srv)
        return srv.start(timeout=20)

    yield start
    for srv in started:
        srv.stop()


async def test_a_relative_script_path_in_myagent_llm_works_for_a_server(serve, open_client):
    assert (ROOT / RELATIVE_SCRIPT.split(":", 1)[1]).is_file()
    srv = serve(AGENTS / "test_agent.py", llm=RELATIVE_SCRIPT)
    session = await (await open_client(srv.url)).create_session()
    final, _ = await session.ask("weather in Beijing?")
    assert final["event"] == "agent.final_answer", final
    assert final["content"] == "The weather is Beijing: sunny, 25°C."


async def test_a_relative_script_path_in_the_agent_file_is_not_found(serve, open_client, tmp_path):
    """The documented exception, and the documented way around it."""
    relative = tmp_path / "relative_agent.py"
    relative.write_text("from myagent import create_react_agent\n"
                        f"agent = create_react_agent(name='rel', llm={RELATIVE_SCRIPT!r})\n")
    anchored = tmp_path / "anchored_agent.py"
    (tmp_path / "script.json").write_text((SCRIPTS / "test_script.json").read_text())
    anchored.write_text("from pathlib import Path\nfrom myagent import create_react_agent\n"
                        "agent = create_react_agent(name='anchored', "
                        "llm='scripted:' + str(Path(__file__).parent / 'script.json'))\n")
    session = await (await open_client(serve(relative).url)).create_session()
    final, _ = await session.ask("hello")
    assert final["event"] == "agent.error", final
    assert final["metadata"]["error_code"] == "LLM_ERROR" and "file not found" in final["content"], final
    session = await (await open_client(serve(anchored).url)).create_session()
    final, _ = await session.ask("hello")
    assert final["event"] == "agent.final_answer", final
