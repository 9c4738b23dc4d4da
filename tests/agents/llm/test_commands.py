"""Tests for myagent.agents.llm.commands: /TOOL command parsing and coercion."""

from __future__ import annotations

import pytest

from myagent.agents.llm.commands import CommandError, coerce_value, command_name, parse_command

from ._samples import WEATHER_TOOL

TOOLS = [WEATHER_TOOL]


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ("/get_weather city=Beijing", {"city": "Beijing"}),
        ('/get_weather city="New York" days=3 metric=yes', {"city": "New York", "days": 3, "metric": True}),
        ("/get_weather city='São Paulo' days=x", {"city": "São Paulo", "days": "x"}),
        ('/get_weather {"city": "北京", "days": 2}', {"city": "北京", "days": 2}),
        ('  /get_weather{"city": "Oslo"}  ', {"city": "Oslo"}),
        ("/get_weather", {}),
        ("/get_weather city=42", {"city": "42"}),  # string-typed: no coercion
        ("/get_weather note=a=b", {"note": "a=b"}),  # unknown keys pass through as strings
    ],
)
def test_parse_command(text: str, arguments: dict) -> None:
    command = parse_command(text, TOOLS)
    assert command is not None and command.name == "get_weather"
    assert command.arguments == arguments


def test_single_parameter_tool_takes_bare_text() -> None:
    tool = {"type": "function", "function": {"name": "echo", "parameters": {
        "type": "object", "properties": {"text": {"type": "string"}}}}}
    assert parse_command("/echo hello world", [tool]).arguments == {"text": "hello world"}


def test_not_a_command_or_unknown_tool() -> None:
    assert parse_command("hello", TOOLS) is None
    assert parse_command("/nope city=x", TOOLS) is None
    assert command_name("/nope city=x") == "nope"
    assert command_name("hello /x") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('/get_weather city="unclosed', "cannot parse"),
        ("/get_weather Beijing", "expected key=value"),
        ("/get_weather {bad json}", "not valid JSON"),
        ('/get_weather ["list"]', "expected key=value"),
        ("/get_weather {[1]", "not valid JSON"),
    ],
)
def test_bad_arguments(text: str, reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        parse_command(text, TOOLS)


@pytest.mark.parametrize(
    ("raw", "schema", "value"),
    [
        ("3", {"type": "integer"}, 3),
        ("3.5", {"type": "number"}, 3.5),
        ("3", {"type": "number"}, 3),
        ("nan", {"type": "number"}, "nan"),
        ("false", {"type": "boolean"}, False),
        ("maybe", {"type": "boolean"}, "maybe"),
        ("[1, 2]", {"type": "array"}, [1, 2]),
        ('{"a": 1}', {"type": "object"}, {"a": 1}),
        ("null", {"type": ["integer", "null"]}, None),
        ("7", {"type": ["string", "integer"]}, "7"),
        ("7", None, "7"),
    ],
)
def test_coerce_value(raw: str, schema: object, value: object) -> None:
    assert coerce_value(raw, schema) == value
