"""The agent the benchmark serves: one cheap tool; the scripted LLM drives it."""

from myagent import create_react_agent
from myagent.tool.base_tool import BaseTool, ToolResult


class GetWeather(BaseTool):
    name = "get_weather"
    description = "Weather for a city."
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

    async def execute(self, city: str) -> ToolResult:
        return ToolResult(output=f"{city}: sunny, 25°C")


agent = create_react_agent(name="bench-agent", tools=[GetWeather()], system_prompt="bench", max_steps=4)
