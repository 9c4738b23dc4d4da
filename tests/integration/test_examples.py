"""Every example agent, served for real and driven through the client."""

from pathlib import Path

import pytest

from myagent.client import AgentClient
from tests.serverproc import ROOT, ServerProcess

EXAMPLES = ROOT / "examples"


@pytest.fixture
def serve():
    servers = []

    def start(name: str, *args: str) -> ServerProcess:
        server = ServerProcess(EXAMPLES / name, "--workers", "1", *args, llm="offline").start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


async def test_weather_agent(serve):
    server = serve("weather_agent.py")
    async with await AgentClient.connect(server.url) as client:
        session = await client.create_session()
        assert session.agent_name == "weather-assistant"
        final, events = await session.ask("/get_weather city=Beijing")
        assert final["event"] == "agent.final_answer" and "Beijing" in final["content"]
        assert any(e["event"] == "agent.tool_result" and e["metadata"]["status"] == "success" for e in events)
        final, _ = await session.ask("/get_weather city=Atlantis")
        assert final["event"] == "agent.final_answer"  # a tool error is fed back, the turn still ends well


async def test_confirm_agent_approved_and_denied(serve):
    server = serve("confirm_agent.py")
    async with await AgentClient.connect(server.url) as client:
        session = await client.create_session()
        for approve, expected in ((True, "Sent 20.00 EUR to alice"), (False, "denied")):
            events = []
            async for event in session.send("/transfer to=alice amount=20"):
                events.append(event)
                if event["event"] == "agent.user_confirm":
                    assert event["metadata"]["tool_name"] == "transfer"
                    await session.respond(event["step_id"], approve)
            result = next(e for e in events if e["event"] == "agent.tool_result")
            assert expected in result["content"]


async def test_notes_agent_keeps_files_in_its_sandbox_dir(serve, tmp_path):
    server = serve("notes_agent.py", "--sandbox-dir", str(tmp_path))
    async with await AgentClient.connect(server.url) as client:
        session = await client.create_session()
        final, _ = await session.ask('/write_note name=todo text="buy milk"')
        assert "saved todo" in final["content"]
        final, _ = await session.ask("/read_note name=todo")
        assert "buy milk" in final["content"]
        final, _ = await session.ask("/read_note name=../../etc/passwd")
        assert "note name" in final["content"]
        other = await client.create_session()  # create_agent(): a fresh folder per session
        final, _ = await other.ask("/list_notes")
        assert "no notes yet" in final["content"]
    notes = list(Path(tmp_path).glob("sandbox-*/notes/*/todo.txt"))
    assert len(notes) == 1 and notes[0].read_text() == "buy milk"
