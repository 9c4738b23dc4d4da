"""The import path agent files use: ``from myagent.tool.base_tool import BaseTool, ToolResult``."""

from myagent.agents.tools import BaseTool, FunctionTool, ToolResult, tool

__all__ = ["BaseTool", "FunctionTool", "ToolResult", "tool"]
