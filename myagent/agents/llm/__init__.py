"""LLM providers and the rule that picks one.

Spec strings (argument, else env ``MYAGENT_LLM``):

* ``openai`` - :class:`OpenAILLM` (``openai:MODEL`` also sets the model);
* ``scripted:PATH`` - :class:`ScriptedLLM` replaying a script file
  (``scripted`` alone uses the built-in echo script);
* ``offline`` - :class:`OfflineLLM`, the demo model.

Unset: ``openai`` if OPENAI_API_KEY or OPENAI_BASE_URL is set, else ``offline``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .base import LLM, LLMError, LLMResponse, TextDelta, ToolCall, message_text, response_to_message
from .offline import OfflineLLM
from .openai_errors import safe_url
from .openai_llm import DEFAULT_MODEL, OpenAILLM
from .scripted import ScriptedLLM

__all__ = [
    "LLM",
    "LLMError",
    "LLMResponse",
    "OfflineLLM",
    "OpenAILLM",
    "ScriptedLLM",
    "TextDelta",
    "ToolCall",
    "describe_llm_choice",
    "get_llm",
    "message_text",
    "response_to_message",
]

_EXPECTED = "expected 'openai', 'scripted:PATH' or 'offline'"


class _Choice(NamedTuple):
    kind: str  # "openai" | "scripted" | "offline"
    arg: str  # model for openai, path for scripted ("" = default)
    origin: str  # "argument", "MYAGENT_LLM" or "auto"


def _resolve(spec: str | None) -> _Choice:
    origin = "argument"
    if spec is None:
        spec, origin = os.environ.get("MYAGENT_LLM", "").strip(), "MYAGENT_LLM"
    if not spec:
        configured = os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
        return _Choice("openai" if configured else "offline", "", "auto")
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in {"openai", "scripted", "offline"} or (kind == "offline" and arg):
        raise LLMError(f"unknown LLM spec {spec!r} ({origin}): {_EXPECTED}")
    return _Choice(kind, arg.strip(), origin)


def get_llm(spec: str | None = None) -> LLM:
    """Build the provider named by ``spec`` (see the module doc).

    Raises LLMError, with a message fit for users, for an unknown spec, an
    unreadable or invalid script, or openai without credentials.
    """
    choice = _resolve(spec)
    if choice.kind == "offline":
        return OfflineLLM()
    if choice.kind == "scripted":
        try:
            return ScriptedLLM(choice.arg or None)
        except ValueError as exc:
            raise LLMError(str(exc)) from exc
    return OpenAILLM(model=choice.arg or None)


def describe_llm_choice(spec: str | None = None) -> str:
    """One human line saying which model ``get_llm(spec)`` would use, and why."""
    try:
        choice = _resolve(spec)
    except LLMError as exc:
        return f"no usable LLM: {exc}"
    if choice.kind == "offline":
        if choice.origin == "auto":
            return (
                "offline demo model (no LLM configured: set OPENAI_API_KEY, "
                "or OPENAI_BASE_URL for a local OpenAI-compatible server)"
            )
        return f"offline demo model (chosen by {choice.origin})"
    if choice.kind == "scripted":
        return f"scripted model replaying {choice.arg or 'the built-in echo script'}"
    model = choice.arg or os.environ.get("MYAGENT_MODEL") or DEFAULT_MODEL
    base_url = os.environ.get("OPENAI_BASE_URL")
    line = f"OpenAI-compatible model {model} at {safe_url(base_url)}"
    if not base_url and not os.environ.get("OPENAI_API_KEY"):
        line += " (not usable: OPENAI_API_KEY is not set)"
    return line
