"""Parse ``/TOOL ...`` commands typed to the offline demo model.

Two argument syntaxes are accepted::

    /get_weather city=Beijing days=3 note="two words"
    /get_weather {"city": "Beijing", "days": 3}

``key=value`` values are strings unless the tool's JSON Schema gives the
parameter a type we can coerce to (integer, number, boolean, array, object,
null). A tool with exactly one parameter also accepts bare text:
``/get_weather Beijing``. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "Command",
    "CommandError",
    "coerce_value",
    "command_name",
    "find_tool",
    "parse_command",
    "tool_name",
    "tool_parameters",
]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
# OpenAI tool names are [A-Za-z0-9_-]+; dots show up in some MCP bridges.
_COMMAND = re.compile(r"/([A-Za-z0-9_.\-]+)(.*)\Z", re.DOTALL)


class CommandError(ValueError):
    """The command names a known tool but its arguments cannot be parsed."""


@dataclass(frozen=True)
class Command:
    """A parsed command: the tool name and its (coerced) arguments."""

    name: str
    arguments: dict[str, Any]


def tool_parameters(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """The JSON Schema ``parameters`` of an OpenAI tool entry (or {})."""
    function = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
    params = function.get("parameters") if isinstance(function, Mapping) else None
    return params if isinstance(params, Mapping) else {}


def tool_name(tool: Mapping[str, Any]) -> str:
    """The function name of an OpenAI tool entry ("" if malformed)."""
    function = tool.get("function")
    name = function.get("name") if isinstance(function, Mapping) else tool.get("name")
    return name if isinstance(name, str) else ""


def find_tool(tools: list[dict], name: str) -> Mapping[str, Any] | None:
    """The tool entry called ``name``, if any."""
    return next((t for t in tools if isinstance(t, Mapping) and tool_name(t) == name), None)


def command_name(text: str) -> str | None:
    """The tool name of a ``/name ...`` command, whether or not the tool exists."""
    match = _COMMAND.match(text.strip())
    return match.group(1) if match else None


def _schema_types(schema: Any) -> list[str]:
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    if isinstance(kind, str):
        return [kind]
    return [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else []


def _coerce_one(raw: str, kind: str) -> tuple[bool, Any]:
    text = raw.strip()
    if kind == "integer":
        try:
            return True, int(text)
        except ValueError:
            return False, None
    if kind == "number":
        try:
            return True, int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            return False, None
        # NaN and infinities have no JSON spelling; leave them to the tool to reject.
        return math.isfinite(value), value
    if kind == "boolean" and text.lower() in _TRUE | _FALSE:
        return True, text.lower() in _TRUE
    if kind == "null" and text.lower() in {"null", "none"}:
        return True, None
    if kind in {"array", "object"}:
        try:
            value = json.loads(text)
        except ValueError:
            return False, None
        return isinstance(value, list if kind == "array" else dict), value
    return False, None


def coerce_value(raw: str, schema: Any) -> Any:
    """Convert ``raw`` to the first JSON Schema type it fits; else keep the string.

    Keeping the string on failure lets the tool's own validation report the
    problem with its own wording instead of us guessing.
    """
    for kind in _schema_types(schema):
        if kind == "string":
            return raw
        ok, value = _coerce_one(raw, kind)
        if ok:
            return value
    return raw


def _parse_json_args(text: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        reason = f"{exc.msg} at column {exc.colno}"
        raise CommandError(f"/{name}: arguments are not valid JSON ({reason})") from None
    if not isinstance(value, dict):
        raise CommandError(f"/{name}: JSON arguments must be an object like {{\"key\": \"value\"}}")
    return value


def _parse_pairs(text: str, name: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise CommandError(f"/{name}: cannot parse arguments ({exc})") from None
    if tokens and not any("=" in t for t in tokens) and len(properties) == 1:
        (only,) = properties
        return {only: coerce_value(" ".join(tokens), properties[only])}
    arguments: dict[str, Any] = {}
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not key:
            raise CommandError(f"/{name}: expected key=value, got {token!r}")
        arguments[key] = coerce_value(raw, properties.get(key))
    return arguments


def parse_command(text: str, tools: list[dict]) -> Command | None:
    """Parse ``text`` if it is a command for one of ``tools``.

    Returns None when ``text`` is not a command or names an unknown tool;
    raises CommandError when the tool is known but the arguments are bad.
    """
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    name, rest = match.group(1), match.group(2).strip()
    tool = find_tool(tools, name)
    if tool is None:
        return None
    properties = tool_parameters(tool).get("properties") or {}
    if rest.startswith("{"):
        return Command(name, _parse_json_args(rest, name))
    return Command(name, _parse_pairs(rest, name, properties))
