"""BaseTool, ToolResult and the @tool decorator (myagent.agents.tools)."""

# String annotations on purpose: @tool must resolve them (get_type_hints).
from __future__ import annotations

import threading
from typing import Annotated, Any, List, Literal, Optional, Union

import pytest

from myagent.agents.exceptions import ToolDefinitionError
from myagent.agents.tools import BaseTool, FunctionTool, ToolArgumentsError, ToolResult, tool


def props(t: FunctionTool) -> dict[str, Any]:
    return t.parameters["properties"]


# -- schema derivation ---------------------------------------------------------------


def test_scalar_types_defaults_and_required() -> None:
    @tool
    def f(city: str, days: int = 3, metric: bool = True, ratio: float = 0.5) -> str:
        """Doc."""
        return ""

    assert f.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "default": 3},
            "metric": {"type": "boolean", "default": True},
            "ratio": {"type": "number", "default": 0.5},
        },
        "required": ["city"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        (list, {"type": "array"}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (List[int], {"type": "array", "items": {"type": "integer"}}),
        (list[list[float]], {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (dict, {"type": "object"}),
        (dict[str, Any], {"type": "object"}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (Optional[str], {"type": ["string", "null"]}),
        (Union[int, None], {"type": ["integer", "null"]}),
        (Union[int, str], {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        (Union[int, str, None], {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]}),
        (Optional[list[str]], {"type": ["array", "null"], "items": {"type": "string"}}),
        (Literal["c", "f"], {"enum": ["c", "f"], "type": "string"}),
        (Literal[1, 2], {"enum": [1, 2], "type": "integer"}),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Annotated[str, "The city"], {"type": "string", "description": "The city"}),
        (Any, {}),
    ],
)
def test_annotation_schemas(annotation: Any, schema: dict) -> None:
    def f(x):  # type: ignore[no-untyped-def]
        """Doc."""

    f.__annotations__ = {"x": annotation}
    assert props(tool(f))["x"] == schema
    assert tool(f).parameters["required"] == ["x"]


def test_pep604_unions_and_none_defaults() -> None:
    @tool
    def f(a: str | None, b: int | None = None, c: str = None, d: Literal["x", "y"] | None = None) -> None:  # type: ignore[assignment]
        """Doc."""

    p = props(f)
    assert p["a"] == {"type": ["string", "null"]}
    assert p["b"] == {"type": ["integer", "null"], "default": None}
    assert p["c"] == {"type": ["string", "null"], "default": None}
    assert p["d"] == {"enum": ["x", "y", None], "type": ["string", "null"], "default": None}
    assert f.parameters["required"] == ["a"]


def test_unannotated_parameters_accept_anything() -> None:
    @tool
    def f(x, y=1):  # type: ignore[no-untyped-def]
        """Doc."""

    assert props(f) == {"x": {}, "y": {"default": 1}}


def test_var_keyword_allows_extra_properties() -> None:
    @tool
    def f(a: int, **rest: Any) -> None:
        """Doc."""

    assert "additionalProperties" not in f.parameters
    assert list(props(f)) == ["a"]


def test_non_json_defaults_are_not_published() -> None:
    marker = object()

    def f(a: Any = marker) -> None:
        """Doc."""

    assert props(tool(f))["a"] == {}


@pytest.mark.parametrize(
    "source",
    [
        "def f(*args: int) -> None: ...",
        "def f(a: int, /) -> None: ...",
        "def f(a: complex) -> None: ...",
        "def f(a: set[int]) -> None: ...",
        "def f(a: 'NoSuchType') -> None: ...",
    ],
)
def test_unsupported_signatures_are_rejected(source: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(ToolDefinitionError):
        tool(namespace["f"])


def test_invalid_names_are_rejected() -> None:
    with pytest.raises(ToolDefinitionError, match="invalid"):
        tool(name="no spaces")(lambda: None)


# -- docstrings ---------------------------------------------------------------------


def test_description_and_google_style_args() -> None:
    @tool
    def get_weather(city: str, unit: Literal["c", "f"] = "c", days: int = 1) -> str:
        """Get the weather
        of a city.

        Longer explanation that is not part of the description.

        Args:
            city (str): The city name,
                in English or Chinese.
            unit: Temperature unit.
            days: How many days.

        Returns:
            A report.
        """
        return ""

    assert get_weather.description == "Get the weather of a city."
    p = props(get_weather)
    assert p["city"]["description"] == "The city name, in English or Chinese."
    assert p["unit"]["description"] == "Temperature unit."
    assert p["days"] == {"type": "integer", "default": 1, "description": "How many days."}


def test_args_section_right_after_the_summary() -> None:
    @tool
    def f(a: int) -> None:
        """Do it.
        Args:
            a: The a.
        """

    assert f.description == "Do it."
    assert props(f)["a"]["description"] == "The a."


def test_annotated_description_wins_over_the_docstring() -> None:
    @tool
    def f(a: Annotated[int, "From Annotated"]) -> None:
        """Doc.

        Args:
            a: From the docstring.
        """

    assert props(f)["a"]["description"] == "From Annotated"


def test_no_docstring_and_decorator_options() -> None:
    @tool(name="remove", description="Remove things.", requires_confirmation=True)
    def delete(path: str) -> str:
        return path

    assert delete.name == "remove"
    assert delete.description == "Remove things."
    assert delete.requires_confirmation is True

    def undocumented() -> None:
        pass

    assert tool(undocumented).description == ""
    with pytest.raises(ToolDefinitionError, match="invalid"):
        tool(lambda: None)  # '<lambda>' is not a valid tool name


def test_openai_tool_entry() -> None:
    @tool
    def ping() -> str:
        """Ping the server."""
        return "pong"

    assert ping.to_openai_tool() == {
        "type": "function",
        "function": {
            "name": "ping",
            "description": "Ping the server.",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    }


# -- execution ----------------------------------------------------------------------


async def test_sync_functions_run_in_a_worker_thread() -> None:
    @tool
    def where() -> int:
        """Thread id."""
        return threading.get_ident()

    assert await where.execute() != threading.get_ident()
    assert where() == threading.get_ident()  # calling the tool calls the function


async def test_async_functions_are_awaited() -> None:
    @tool
    async def double(x: int) -> int:
        """Double."""
        return 2 * x

    assert await double.execute(x=4) == 8


# -- validation ---------------------------------------------------------------------


class Greet(BaseTool):
    name = "greet"
    description = "Greet someone."
    parameters = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "times": {"type": "integer", "default": 1}},
        "required": ["name"],
    }

    async def execute(self, name: str, times: int = 1) -> ToolResult:
        return ToolResult(output=" ".join([f"Hello, {name}!"] * times))


def test_validation_fills_defaults_and_reports_errors_for_the_model() -> None:
    greet = Greet()
    assert greet.validate_arguments({"name": "Ann"}) == {"name": "Ann", "times": 1}
    with pytest.raises(ToolArgumentsError, match=r"arguments must contain \['name'\]"):
        greet.validate_arguments({})
    with pytest.raises(ToolArgumentsError, match=r"arguments.name must be string"):
        greet.validate_arguments({"name": 3})
    with pytest.raises(ToolArgumentsError, match="JSON object"):
        greet.validate_arguments(["Ann"])


def test_decorated_tools_reject_extra_arguments() -> None:
    @tool
    def f(a: int) -> None:
        """Doc."""

    with pytest.raises(ToolArgumentsError):
        f.validate_arguments({"a": 1, "b": 2})


def test_schema_is_compiled_once_per_class() -> None:
    first, second = Greet(), Greet()
    assert first.compile_parameters() is second.compile_parameters()

    class Other(Greet):
        parameters = {"type": "object", "properties": {}}

    assert Other().compile_parameters() is not first.compile_parameters()


def test_default_parameters_are_an_empty_object_schema() -> None:
    class NoArgs(BaseTool):
        name = "noargs"
        description = "No arguments."

        async def execute(self) -> str:
            return "ok"

    assert NoArgs().parameters == {"type": "object", "properties": {}}
    assert NoArgs().validate_arguments({}) == {}


def test_base_tool_is_abstract() -> None:
    class Incomplete(BaseTool):
        name = "incomplete"

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


# -- ToolResult ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (ToolResult(output="plain"), "plain"),
        (ToolResult(output={"temp": 21, "city": "北京"}), '{"temp":21,"city":"北京"}'),
        (ToolResult(output=[1, 2]), "[1,2]"),
        (ToolResult(), ""),
        (ToolResult(error="bad city"), "Error: bad city"),
        (ToolResult(output="ignored", error="bad"), "Error: bad"),
    ],
)
def test_tool_result_text(result: ToolResult, text: str) -> None:
    assert str(result) == text
    assert result.failed is (result.error is not None)
