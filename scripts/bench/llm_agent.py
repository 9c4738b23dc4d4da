"""The agent the real-LLM rows serve: one tool, the OpenAI provider (the environment names the
endpoint: OPENAI_BASE_URL points at `myagent-ws fake-llm` serving llm_script.json)."""

from myagent import create_toolcall_agent
from myagent.tool.base_tool import BaseTool, ToolResult


class GetWeather(BaseTool):
    name = "get_weather"
    description = "Weather for a city."
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

    async def execute(self, city: str) -> ToolResult:
        return ToolResult(output=f"{city}: sunny, 25°C")


agent = create_toolcall_agent(
    name="bench-llm-agent",
    tools=[GetWeather()],
    system_prompt="You are a weather assistant. Use the tool, then answer briefly.",
    max_steps=4,
)
