"""myagent.tool.base_tool: the import path agent files use."""

from __future__ import annotations

import myagent
import myagent.agents.tools as tools
from myagent.tool import base_tool


def test_reexports_are_the_runtime_classes() -> None:
    assert base_tool.BaseTool is tools.BaseTool is myagent.BaseTool
    assert base_tool.ToolResult is tools.ToolResult is myagent.ToolResult
    assert base_tool.tool is tools.tool


def test_myagent_tool_is_the_decorator_in_either_import_order() -> None:
    # After `import myagent.tool.base_tool`, Python binds `myagent.tool` to the
    # subpackage; the subpackage is callable so `from myagent import tool` works.
    import myagent.tool.base_tool  # noqa: F401

    from myagent import tool as decorator

    def ping() -> str:
        """Ping."""
        return "pong"

    assert isinstance(decorator(ping), tools.FunctionTool)
    made = decorator(name="ping2", requires_confirmation=True)(ping)
    assert (made.name, made.requires_confirmation) == ("ping2", True)


def test_public_api_of_the_package() -> None:
    for name in ["create_react_agent", "create_toolcall_agent", "BaseTool", "ToolResult", "tool", "AgentEvent", "Agent"]:
        assert name in myagent.__all__
        assert getattr(myagent, name) is not None
    assert myagent.__version__ == "0.1.0"


async def test_seed_style_tool_subclass() -> None:
    class GreetTool(base_tool.BaseTool):
        name = "greet"
        description = "向用户问好"
        parameters = {
            "type": "object",
            "properties": {"name": {"type": "string", "description": "用户名"}},
            "required": ["name"],
        }

        async def execute(self, name: str) -> base_tool.ToolResult:
            return base_tool.ToolResult(output=f"Hello, {name}!")

    greet = GreetTool()
    assert str(await greet.execute(**greet.validate_arguments({"name": "Bo"}))) == "Hello, Bo!"
    assert greet.to_openai_tool()["function"]["name"] == "greet"
