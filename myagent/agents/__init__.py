"""The agent runtime that runs inside a sandbox.

Modules: ``agent`` (create_react_agent, the tool-calling loop), ``tools``
(BaseTool, ToolResult, @tool), ``events`` (AgentEvent, ConfirmRequest),
``history`` (repair/validate), ``loader`` (agent files), ``exceptions``, and
the ``llm`` package (providers). Import from those modules, or from ``myagent``.
"""
