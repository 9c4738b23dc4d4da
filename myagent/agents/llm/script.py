"""Scripted replies: a pure engine shared by ScriptedLLM and FakeLLMServer.

A script is a JSON document::

    {"rules": [{"match": "weather", "steps": [STEP, ...]}, ...],
     "default": [STEP, ...],
     "chunk_size": 4,
     "token_delay_ms": 0}

    STEP = {"content": "text template",
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "{user}"}}],
            "reasoning": "optional template",
            "delay_ms": 0}

Selection depends on the message history alone, so a session restored in
another process replays identically:

* the first rule whose ``match`` occurs (case-insensitively) in the last user
  message wins, else ``default`` (the built-in echo step if absent);
* step ``k`` is used, where ``k`` counts the assistant messages after the last
  user message; past the end, the last step is reused without its tool calls,
  so an agent loop always terminates.

Templates (in ``content``, ``reasoning`` and string argument values) know
exactly ``{user}``, ``{tool_result}``, ``{turn}``, ``{first_user}`` and
``{previous_user}``. Any other brace is literal, and substituted text is never
rescanned, so user input cannot inject templates. Tool-call ``arguments`` given
as a string are sent verbatim (no substitution): that is how a script simulates
a model emitting malformed JSON.

Everything here is pure except :func:`load_script`, which reads one file.
"""

from __future__ import annotations

from operator import methodcaller

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .base import LLMResponse, ToolCall, message_text

__all__ = [
    "DEFAULT_SCRIPT",
    "Reply",
    "Script",
    "Step",
    "coerce_script",
    "chunk_text",
    "load_script",
    "parse_script",
    "plan_reply",
    "render_reply",
    "substitute",
]

DEFAULT_SCRIPT: dict[str, Any] = {"default": [{"content": "You said: {user}"}]}
DEFAULT_CHUNK_SIZE = 4

_TEMPLATE = re.compile(r"\{(user|tool_result|turn|first_user|previous_user)\}")
_TOP_KEYS = {"rules", "default", "chunk_size", "token_delay_ms", "description"}
_RULE_KEYS = {"match", "steps"}
_STEP_KEYS = {"content", "tool_calls", "reasoning", "delay_ms"}
_CALL_KEYS = {"name", "arguments"}


@dataclass(frozen=True)
class ToolCallTemplate:
    """A tool call to emit; ``arguments`` is a JSON object or raw text."""

    name: str
    arguments: dict[str, Any] | str


@dataclass(frozen=True)
class Step:
    """One scripted model step."""

    content: str = ""
    tool_calls: tuple[ToolCallTemplate, ...] = ()
    reasoning: str | None = None
    delay_ms: float = 0.0


_ECHO_STEPS: tuple[Step, ...] = (Step(content="You said: {user}"),)


@dataclass(frozen=True)
class Rule:
    """Steps used when ``match`` occurs in the last user message."""

    match: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Script:
    """A validated script, ready for :func:`plan_reply`."""

    rules: tuple[Rule, ...] = ()
    default: tuple[Step, ...] = _ECHO_STEPS
    chunk_size: int = DEFAULT_CHUNK_SIZE
    token_delay_ms: float = 0.0
    source: str = "<builtin echo>"


@dataclass(frozen=True)
class Reply:
    """A rendered reply: text deltas, the final response and pacing hints."""

    deltas: list[str]
    response: LLMResponse
    delay_ms: float = 0.0
    token_delay_ms: float = 0.0


# ---------------------------------------------------------------- validation


def _fail(source: str, where: str, reason: str) -> ValueError:
    return ValueError(f"invalid LLM script {source}: {where} {reason}")


def _check_keys(obj: Any, allowed: set[str], source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise _fail(source, where, f"must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise _fail(source, where, f"has unknown keys {unknown} (allowed: {sorted(allowed)})")
    return obj


def _number(value: Any, source: str, where: str) -> float:
    # bool is an int subclass; "delay_ms": true is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise _fail(source, where, "must be a non-negative number")
    return float(value)


def _optional_str(obj: Mapping[str, Any], key: str, source: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(source, f"{where}.{key}", "must be a string")
    return value


def _parse_call(obj: Any, source: str, where: str) -> ToolCallTemplate:
    call = _check_keys(obj, _CALL_KEYS, source, where)
    name = call.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(source, f"{where}.name", "must be a non-empty string")
    arguments = call.get("arguments", {})
    if not isinstance(arguments, (dict, str)):
        raise _fail(source, f"{where}.arguments", "must be a JSON object or a string")
    return ToolCallTemplate(name=name, arguments=arguments)


def _parse_step(obj: Any, source: str, where: str) -> Step:
    step = _check_keys(obj, _STEP_KEYS, source, where)
    calls = step.get("tool_calls", [])
    if not isinstance(calls, list):
        raise _fail(source, f"{where}.tool_calls", "must be a list")
    return Step(
        content=_optional_str(step, "content", source, where) or "",
        tool_calls=tuple(
            _parse_call(c, source, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls)
        ),
        reasoning=_optional_str(step, "reasoning", source, where),
        delay_ms=_number(step.get("delay_ms", 0), source, f"{where}.delay_ms"),
    )


def _parse_steps(obj: Any, source: str, where: str) -> tuple[Step, ...]:
    if not isinstance(obj, list) or not obj:
        raise _fail(source, where, "must be a non-empty list of steps")
    return tuple(_parse_step(s, source, f"{where}[{i}]") for i, s in enumerate(obj))


def _parse_rule(obj: Any, source: str, where: str) -> Rule:
    rule = _check_keys(obj, _RULE_KEYS, source, where)
    match = rule.get("match")
    if not isinstance(match, str):
        raise _fail(source, f"{where}.match", "must be a string")
    return Rule(match=match, steps=_parse_steps(rule.get("steps"), source, f"{where}.steps"))


def parse_script(data: Any, source: str = "<script>") -> Script:
    """Validate a decoded script document; raise ValueError naming the bad field."""
    top = _check_keys(data, _TOP_KEYS, source, "top level")
    rules = top.get("rules", [])
    if not isinstance(rules, list):
        raise _fail(source, "rules", "must be a list")
    chunk_size = top.get("chunk_size", DEFAULT_CHUNK_SIZE)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise _fail(source, "chunk_size", "must be a positive integer")
    default = _ECHO_STEPS if "default" not in top else _parse_steps(top["default"], source, "default")
    return Script(
        rules=tuple(_parse_rule(r, source, f"rules[{i}]") for i, r in enumerate(rules)),
        default=default,
        chunk_size=chunk_size,
        token_delay_ms=_number(top.get("token_delay_ms", 0), source, "token_delay_ms"),
        source=source,
    )


def load_script(path: str | os.PathLike[str]) -> Script:
    """Read and validate a script file; ValueError names the path and the reason."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ValueError(f"LLM script {source}: file not found") from None
    except OSError as exc:
        raise ValueError(f"LLM script {source}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"LLM script {source}: not valid JSON ({exc})") from None
    return parse_script(data, source)


def coerce_script(spec: Script | Mapping[str, Any] | str | os.PathLike[str] | None) -> Script:
    """Accept a Script, a decoded document, a file path, or None (the echo script)."""
    if spec is None:
        return parse_script(DEFAULT_SCRIPT, "<builtin echo>")
    if isinstance(spec, Script):
        return spec
    if isinstance(spec, Mapping):
        return parse_script(dict(spec))
    return load_script(spec)


# ----------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Context:
    values: dict[str, str]  # template name -> text
    turn: int  # number of user messages
    step_index: int  # assistant messages since the last user message


def _context(messages: Sequence[Mapping[str, Any]]) -> _Context:
    # Called once per LLM step with the whole history: scan from the ends and count roles
    # at C speed, so a long conversation does not make every step O(history) in Python.
    roles = list(map(methodcaller("get", "role"), messages))
    turn = roles.count("user")
    found: list[int] = []
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "user":
            found.append(i)
            if len(found) == 2:
                break
    last_user = found[0] if found else -1
    first_user = roles.index("user") if turn else -1
    tool_result = ""
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "tool":
            tool_result = message_text(messages[i])
            break
    values = {
        "user": message_text(messages[last_user]) if found else "",
        "tool_result": tool_result,
        "turn": str(turn),
        "first_user": message_text(messages[first_user]) if turn else "",
        "previous_user": message_text(messages[found[1]]) if len(found) > 1 else "",
    }
    step_index = roles[last_user + 1:].count("assistant")
    return _Context(values=values, turn=turn, step_index=step_index)


def substitute(template: str, values: Mapping[str, str]) -> str:
    """Replace the known ``{name}`` placeholders in one pass; all else is literal."""
    return _TEMPLATE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _substitute_json(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, values)
    if isinstance(value, dict):
        return {k: _substitute_json(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_json(v, values) for v in value]
    return value


def chunk_text(text: str, size: int) -> list[str]:
    """Split text into pieces of ``size`` characters (code points)."""
    return [text[i:i + size] for i in range(0, len(text), size)]


def _select_step(script: Script, ctx: _Context) -> Step:
    needle = ctx.values["user"].casefold()
    steps = script.default
    for rule in script.rules:
        if rule.match.casefold() in needle:
            steps = rule.steps
            break
    if ctx.step_index < len(steps):
        return steps[ctx.step_index]
    last = steps[-1]
    return Step(content=last.content, reasoning=last.reasoning, delay_ms=last.delay_ms)


def plan_reply(script: Script, messages: Sequence[Mapping[str, Any]]) -> Reply:
    """Render the scripted reply to ``messages`` with its pacing hints."""
    ctx = _context(messages)
    step = _select_step(script, ctx)
    content = substitute(step.content, ctx.values)
    calls = []
    for i, call in enumerate(step.tool_calls):
        if isinstance(call.arguments, str):
            arguments = call.arguments
        else:
            rendered = _substitute_json(call.arguments, ctx.values)
            arguments = json.dumps(rendered, ensure_ascii=False)
        call_id = f"call_{ctx.turn}_{ctx.step_index}_{i}"
        calls.append(ToolCall(id=call_id, name=call.name, arguments=arguments))
    response = LLMResponse(
        content=content,
        tool_calls=calls,
        reasoning=None if step.reasoning is None else substitute(step.reasoning, ctx.values),
        finish_reason="tool_calls" if calls else "stop",
    )
    return Reply(
        deltas=chunk_text(content, script.chunk_size),
        response=response,
        delay_ms=step.delay_ms,
        token_delay_ms=script.token_delay_ms,
    )


def render_reply(script: Script, messages: Sequence[Mapping[str, Any]]) -> tuple[list[str], LLMResponse]:
    """Return the reply as (content deltas, final LLMResponse)."""
    reply = plan_reply(script, messages)
    return reply.deltas, reply.response
