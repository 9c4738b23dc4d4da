"""Tools for agent files; see :mod:`myagent.tool.base_tool`."""

from myagent.tool.base_tool import BaseTool, FunctionTool, ToolResult, tool

__all__ = ["BaseTool", "FunctionTool", "ToolResult", "tool"]
