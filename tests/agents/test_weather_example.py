"""examples/weather_agent.py, run through the offline demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

from myagent.agents.events import TOOL_CALL, TOOL_RESULT
from myagent.agents.loader import load_agent_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "weather_agent.py"


@pytest.fixture()
def factory(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MYAGENT_LLM", "offline")
    return load_agent_file(EXAMPLE)


def test_describe(factory) -> None:  # type: ignore[no-untyped-def]
    info = factory.describe()
    assert info["name"] == "weather-assistant"
    assert [t["name"] for t in info["tools"]] == ["get_weather", "get_city_info"]
    assert info["tools"][0]["parameters"]["required"] == ["city"]


async def test_get_weather_through_the_offline_llm(factory) -> None:  # type: ignore[no-untyped-def]
    agent = factory.new()
    events = [e async for e in agent.astream("/get_weather city=Beijing")]
    (call,) = [e for e in events if e.kind == TOOL_CALL]
    (result,) = [e for e in events if e.kind == TOOL_RESULT]
    assert call.metadata == {"tool": "get_weather", "args": {"city": "Beijing"}, "status": "running"}
    assert result.metadata["status"] == "success"
    assert "Beijing" in result.content and "°C" in result.content
    assert events[-1].kind == "final_answer" and "Beijing" in events[-1].content


@pytest.mark.parametrize("city", ["Beijing", "北京", "shanghai", "上海", "Guangzhou", "Shenzhen", "New York", "london", "Tokyo"])
async def test_known_cities(factory, city: str) -> None:  # type: ignore[no-untyped-def]
    for tool in factory.tools:
        result = await tool.execute(city=city)
        assert result.error is None and result.output


async def test_unknown_city_is_a_tool_error(factory) -> None:  # type: ignore[no-untyped-def]
    agent = factory.new()
    events = [e async for e in agent.astream("/get_city_info city=Atlantis")]
    (result,) = [e for e in events if e.kind == TOOL_RESULT]
    assert result.metadata["status"] == "failed"
    assert "Unknown city 'Atlantis'" in result.metadata["error"]
