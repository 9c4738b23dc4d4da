"""Tools: the ``BaseTool`` class, ``ToolResult`` and the ``@tool`` decorator.

Agent files import these through ``myagent.tool.base_tool``. A tool describes
its arguments with a JSON Schema (``parameters``); the runtime validates every
call against it (compiled once with fastjsonschema) before ``execute`` runs, so
a model's bad arguments come back to the model as a tool error, not a crash.
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import re
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import fastjsonschema
import orjson

from .exceptions import ToolDefinitionError

__all__ = [
    "TOOL_NAME_PATTERN",
    "BaseTool",
    "FunctionTool",
    "ToolArgumentsError",
    "ToolResult",
    "tool",
]

# What OpenAI-compatible APIs accept as a function name.
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def _stringify(value: Any) -> str:
    """Text for the model: strings as-is, JSON for data, str() for the rest."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return str(value)


@dataclass
class ToolResult:
    """What a tool returns: an output, or an error the model should see.

    ``system`` is an optional note for the host (not sent to the model).
    ``str()`` gives the text the model sees: the output, or ``"Error: ..."``.
    """

    output: Any = None
    error: str | None = None
    system: str | None = None

    @property
    def failed(self) -> bool:
        """True when the tool reported an error."""
        return self.error is not None

    def __str__(self) -> str:
        if self.error is not None:
            return f"Error: {self.error}"
        return _stringify(self.output)


class ToolArgumentsError(ValueError):
    """The model's arguments do not satisfy the tool's ``parameters`` schema."""


class BaseTool(ABC):
    """Base class of every tool.

    Subclasses set ``name``, ``description`` and ``parameters`` (a JSON Schema
    for the keyword arguments of :meth:`execute`) as class attributes, and set
    ``requires_confirmation = True`` for tools a user must approve per call.
    Tool instances are shared by every clone of an agent: keep them free of
    per-conversation state.
    """

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = _EMPTY_SCHEMA
    requires_confirmation: bool = False

    @abstractmethod
    async def execute(self, **kwargs: Any) -> ToolResult | str:
        """Run the tool with validated arguments."""

    def to_openai_tool(self) -> dict[str, Any]:
        """The entry of an OpenAI ``tools`` list describing this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def compile_parameters(self) -> Callable[[Any], Any]:
        """The compiled validator of ``parameters``, built once and cached.

        The cache lives on the class when ``parameters`` is a class attribute
        (one compile per tool class) and on the instance otherwise (tools made
        by ``@tool``). Raises ToolDefinitionError for an invalid schema.
        """
        owner: Any = self if "parameters" in vars(self) else type(self)
        cached = vars(owner).get("_compiled_parameters")
        if cached is not None and cached[0] is self.parameters:
            return cached[1]
        try:
            validator = fastjsonschema.compile(self.parameters)
        except (fastjsonschema.JsonSchemaDefinitionException, TypeError, ValueError) as exc:
            raise ToolDefinitionError(f"tool {self.name!r} has an invalid parameters schema: {exc}") from None
        setattr(owner, "_compiled_parameters", (self.parameters, validator))
        return validator

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        """Check ``arguments`` against ``parameters``; return them with defaults filled.

        Raises ToolArgumentsError with a message meant for the model.
        """
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(
                f"arguments must be a JSON object, got {type(arguments).__name__}"
            )
        validator = self.compile_parameters()
        try:
            validated = validator(arguments)
        except fastjsonschema.JsonSchemaValueException as exc:
            message = exc.message
            if message.startswith("data"):
                message = "arguments" + message[len("data"):]
            raise ToolArgumentsError(message) from None
        return validated if isinstance(validated, dict) else arguments

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class FunctionTool(BaseTool):
    """A tool built by :func:`tool` from a plain (sync or async) function.

    Sync functions run in a worker thread so they never block the event loop.
    Calling the tool object calls the original function.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str,
        description: str,
        parameters: dict[str, Any],
        requires_confirmation: bool = False,
    ):
        self.func = func
        self.name = name
        self.description = description
        self.parameters = parameters
        self.requires_confirmation = requires_confirmation
        self._is_async = inspect.iscoroutinefunction(func)

    async def execute(self, **kwargs: Any) -> Any:
        if self._is_async:
            return await self.func(**kwargs)
        result = await asyncio.to_thread(self.func, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


# -- @tool --------------------------------------------------------------------


def tool(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_confirmation: bool = False,
) -> Any:
    """Turn a typed function into a tool; use as ``@tool`` or ``@tool(...)``.

    The JSON Schema comes from the signature (str, int, float, bool, list[...],
    dict[...], Optional, Literal, Annotated[T, "description"]; parameters
    without a default are required), the description from the docstring's
    first paragraph, and per-parameter descriptions from a Google-style
    ``Args:`` section. Raises ToolDefinitionError for unsupported signatures.
    """

    def build(fn: Callable[..., Any]) -> FunctionTool:
        tool_name = name or fn.__name__
        if not TOOL_NAME_PATTERN.match(tool_name):
            raise ToolDefinitionError(
                f"tool name {tool_name!r} is invalid: use 1-64 letters, digits, '_' or '-'"
            )
        doc = inspect.getdoc(fn) or ""
        summary, arg_docs = _parse_docstring(doc)
        return FunctionTool(
            fn,
            name=tool_name,
            description=summary if description is None else description,
            parameters=_signature_schema(fn, arg_docs),
            requires_confirmation=requires_confirmation,
        )

    if func is not None:
        if not callable(func):
            raise ToolDefinitionError("@tool expects a function")
        return build(func)
    return build


_SIMPLE_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARRAY_ORIGINS = {list, tuple, collections.abc.Sequence, collections.abc.Iterable}
_OBJECT_ORIGINS = {dict, collections.abc.Mapping}


def _signature_schema(fn: Callable[..., Any], arg_docs: dict[str, str]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # unresolvable forward references and the like
        raise ToolDefinitionError(f"cannot read the annotations of {fn.__name__}(): {exc}") from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra_allowed = False
    for param in inspect.signature(fn).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            extra_allowed = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            raise ToolDefinitionError(
                f"{fn.__name__}(): parameter {param.name!r} must be passable by keyword"
            )
        where = f"{fn.__name__}({param.name})"
        schema = _type_schema(hints.get(param.name, Any), where)
        if param.default is param.empty:
            required.append(param.name)
        else:
            if param.default is None:
                schema = _nullable(schema)
            if _is_json(param.default):
                schema["default"] = param.default
        if param.name in arg_docs and "description" not in schema:
            schema["description"] = arg_docs[param.name]
        properties[param.name] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if not extra_allowed:
        result["additionalProperties"] = False
    return result


def _type_schema(tp: Any, where: str) -> dict[str, Any]:
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    if tp in _SIMPLE_TYPES:
        return {"type": _SIMPLE_TYPES[tp]}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        schema = _type_schema(args[0], where)
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = notes[0]
        return schema
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            inner = _type_schema(members[0], where)
        else:
            inner = {"anyOf": [_type_schema(a, where) for a in members]}
        return _nullable(inner) if len(members) < len(args) else inner
    if origin is typing.Literal:
        return _literal_schema(args, where)
    if tp in _ARRAY_ORIGINS or origin in _ARRAY_ORIGINS:
        schema: dict[str, Any] = {"type": "array"}
        item_args = [a for a in args if a is not Ellipsis]
        if len(set(item_args)) == 1:
            schema["items"] = _type_schema(item_args[0], where)
        return schema
    if tp in _OBJECT_ORIGINS or origin in _OBJECT_ORIGINS:
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = _type_schema(args[1], where)
        return schema
    raise ToolDefinitionError(f"{where}: unsupported annotation {tp!r}")


def _literal_schema(values: tuple[Any, ...], where: str) -> dict[str, Any]:
    kinds = set()
    for value in values:
        kind = _SIMPLE_TYPES.get(type(value)) if value is not None else "null"
        if kind is None:
            raise ToolDefinitionError(f"{where}: Literal values must be str, int, float, bool or None")
        kinds.add(kind)
    schema: dict[str, Any] = {"enum": list(values)}
    if len(kinds) == 1:
        schema["type"] = kinds.pop()
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The same schema, also accepting null (a schema accepting anything is kept)."""
    if not schema or _accepts_null(schema):
        return schema
    out = dict(schema)
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
        return out
    if "enum" in out and kind is None:
        return out
    if set(out) == {"anyOf"}:
        return {"anyOf": [*out["anyOf"], {"type": "null"}]}
    return {"anyOf": [schema, {"type": "null"}]}


def _accepts_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(isinstance(s, dict) and _accepts_null(s) for s in schema.get("anyOf", ()))


def _is_json(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


# -- docstrings ------------------------------------------------------------------

_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters|Params)\s*:\s*$")
_ANY_HEADER = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")
_ARG_LINE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph (one line) and the ``Args:`` descriptions."""
    lines = doc.splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _ANY_HEADER.match(line.strip()):
            break
        summary.append(line.strip())
    return " ".join(summary), _parse_args_section(lines)


def _parse_args_section(lines: list[str]) -> dict[str, str]:
    start = next((i for i, line in enumerate(lines) if _ARGS_HEADER.match(line.strip())), None)
    if start is None:
        return {}
    header_indent = _indent(lines[start])
    docs: dict[str, str] = {}
    current: str | None = None
    item_indent: int | None = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = _indent(line)
        if indent <= header_indent:
            break
        if item_indent is None:
            item_indent = indent
        match = _ARG_LINE.match(line.strip())
        if indent <= item_indent and match:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current is not None:
            docs[current] = f"{docs[current]} {line.strip()}".strip()
    return docs


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
