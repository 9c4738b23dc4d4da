"""OfflineLLM: the honest demo model used when no LLM is configured.

It does not understand free text. It says so, lists the agent's tools, and
runs ``/TOOL key=value`` or ``/TOOL {"json": "args"}`` commands as tool calls,
so every feature of a served agent (tool calls, confirmations, streaming) can
be tried without an API key. Deterministic and instant.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, AsyncIterator, Mapping

from ..usage import ZERO_USAGE
from .base import LLMResponse, TextDelta, ToolCall, message_text
from .commands import CommandError, command_name, parse_command, tool_name, tool_parameters

__all__ = ["OfflineLLM", "help_text"]

logger = logging.getLogger("myagent.agents.llm.offline")

# Tool output is echoed back verbatim; cap it so a huge result stays readable.
MAX_RESULT_CHARS = 4000
_WORDS = re.compile(r"\S+\s*|\s+")

INTRO = (
    "I'm the offline demo model of myagent-ws, not a real LLM: I can't understand "
    "free text. To chat with a real model, set OPENAI_API_KEY (or OPENAI_BASE_URL "
    "for a local OpenAI-compatible server) and restart."
)


def _describe_param(name: str, schema: Any, required: bool) -> str:
    kind = schema.get("type", "any") if isinstance(schema, Mapping) else "any"
    kind = "|".join(kind) if isinstance(kind, list) else str(kind)
    text = f"{name}: {kind}" + ("" if required else " (optional)")
    desc = schema.get("description") if isinstance(schema, Mapping) else None
    return f"{text} - {desc}" if desc else text


def _describe_tool(tool: Mapping[str, Any]) -> str:
    params = tool_parameters(tool)
    properties = params.get("properties") or {}
    required = set(params.get("required") or [])
    description = (tool.get("function") or {}).get("description") or ""
    lines = [f"- {tool_name(tool)}" + (f": {description}" if description else "")]
    lines += [f"    {_describe_param(n, s, n in required)}" for n, s in properties.items()]
    return "\n".join(lines)


def _example(tools: list[dict]) -> str:
    tool = tools[0]
    properties = tool_parameters(tool).get("properties") or {}
    pairs = " ".join(f"{name}=..." for name in list(properties)[:2])
    return f"/{tool_name(tool)} {pairs}".rstrip()


def help_text(tools: list[dict]) -> str:
    """The tool list and the command syntax, as shown to users."""
    if not tools:
        return "This agent has no tools, so there is nothing I can run."
    listing = "\n".join(_describe_tool(t) for t in tools)
    return (
        f"Available tools:\n{listing}\n\n"
        "Run a tool by typing a command:\n"
        '  /TOOL key=value key2="quoted value"\n'
        '  /TOOL {"key": "value"}\n'
        f"For example: {_example(tools)}"
    )


def _tool_results_text(messages: list[dict]) -> str:
    """Describe the trailing tool messages, naming each tool via its call id."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            names[call.get("id", "")] = (call.get("function") or {}).get("name", "tool")
    trailing = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.append(message)
    parts = []
    for message in reversed(trailing):
        content = message.get("content")
        output = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        if len(output) > MAX_RESULT_CHARS:
            output = f"{output[:MAX_RESULT_CHARS]}... ({len(output) - MAX_RESULT_CHARS} more characters)"
        parts.append(f"{names.get(message.get('tool_call_id', ''), 'tool')} returned: {output}")
    return "\n".join(parts)


def _last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


class OfflineLLM:
    """Demo model: explains itself, lists tools and turns commands into tool calls."""

    name = "offline"

    def reply(self, messages: list[dict], tools: list[dict]) -> LLMResponse:
        """Compute the full reply without streaming (pure, deterministic)."""
        if messages and messages[-1].get("role") == "tool":
            return LLMResponse(content=_tool_results_text(messages), finish_reason="stop")
        text = _last_user_text(messages)
        try:
            command = parse_command(text, tools)
        except CommandError as exc:
            return LLMResponse(content=f"{exc}\n\n{help_text(tools)}", finish_reason="stop")
        if command is not None:
            # Unique within a history: one call per user turn and step.
            turn = sum(1 for m in messages if m.get("role") == "user")
            call_id = f"call_offline_{turn}_{len(messages)}"
            arguments = json.dumps(command.arguments, ensure_ascii=False)
            call = ToolCall(id=call_id, name=command.name, arguments=arguments)
            return LLMResponse(content="", tool_calls=[call], finish_reason="tool_calls")
        unknown = command_name(text)
        if unknown is not None:
            text = f"Unknown tool '{unknown}'.\n\n{help_text(tools)}"
            return LLMResponse(content=text, finish_reason="stop")
        return LLMResponse(content=f"{INTRO}\n\n{help_text(tools)}", finish_reason="stop")

    async def stream(
        self, messages: list[dict], tools: list[dict]
    ) -> AsyncIterator[TextDelta | LLMResponse]:
        """Stream the reply as word-sized TextDelta chunks, then the response."""
        response = self.reply(messages, tools)
        logger.debug(
            "offline reply: %d chars, %d tool calls", len(response.content), len(response.tool_calls)
        )
        for word in _WORDS.findall(response.content):
            yield TextDelta(word)
        response.usage = ZERO_USAGE  # runs here: no tokens are spent
        yield response
