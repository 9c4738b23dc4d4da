"""OpenAILLM: any OpenAI-compatible chat-completions endpoint, streamed.

Configuration (constructor arguments win over the environment):

* ``model``: ``MYAGENT_MODEL``, default ``gpt-4o-mini``;
* ``base_url``: ``OPENAI_BASE_URL``, default OpenAI's endpoint;
* ``api_key``: ``OPENAI_API_KEY``; ``not-needed`` when only a base_url is set,
  since local servers ignore it;
* ``timeout``: ``MYAGENT_LLM_TIMEOUT`` seconds, default 60;
* ``max_retries``: ``MYAGENT_LLM_MAX_RETRIES``, default 2.

Time bounds. ``timeout`` caps, as one deadline, everything before the response
headers arrive: connecting, the SDK's retries and its backoff. It also caps the
silence between two stream chunks, but not the length of a steadily streaming
answer. Retries are the SDK's own (connection errors, 408/409/429/5xx), made
before any delta is yielded; a stream cut mid-answer is not retried, since the
caller has already shown part of it. When the endpoint is down:

* connection refused fails in milliseconds, so the cost is the SDK backoff,
  0.5 s * 2**i * (0.75..1) before retry i+1 (capped at 8 s): about 0.5 s for
  ``max_retries=1`` and 1.1-1.5 s for the default 2;
* a black-holed host costs up to 5 s (connect timeout) per attempt plus
  backoff, about 16.5 s with the defaults;
* a server's Retry-After (honoured by the SDK up to 2 min) is still cut off at
  ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import openai

from .base import LLMError, LLMResponse, TextDelta, ToolCall
from .openai_errors import map_openai_error, safe_url

__all__ = ["OpenAILLM", "DEFAULT_MODEL", "DEFAULT_TIMEOUT", "DEFAULT_MAX_RETRIES"]

logger = logging.getLogger("myagent.agents.llm.openai")

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
CONNECT_TIMEOUT = 5.0
LOCAL_API_KEY = "not-needed"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise LLMError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise LLMError(f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _StreamAssembler:
    """Accumulate chunk deltas into one LLMResponse."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None

    def add_tool_delta(self, delta: Any) -> None:
        # OpenAI sends id and name once, then argument pieces under the same
        # index; servers that omit the index get one call per new id.
        index = delta.index
        if index is None:
            index = len(self.calls) if delta.id or not self.calls else max(self.calls)
        call = self.calls.setdefault(index, _PartialCall())
        if delta.id and not call.id:
            call.id = delta.id
        function = delta.function
        if function is not None:
            if function.name and not call.name:
                call.name = function.name
            if function.arguments:
                call.arguments.append(function.arguments)

    def add_reasoning(self, delta: Any) -> None:
        # Not in the OpenAI schema: DeepSeek/vLLM send reasoning_content,
        # OpenRouter sends reasoning. Pydantic keeps them as extra fields.
        for attr in ("reasoning_content", "reasoning"):
            piece = getattr(delta, attr, None)
            if isinstance(piece, str) and piece:
                self.reasoning.append(piece)
                return

    def response(self) -> LLMResponse:
        calls = [
            ToolCall(id=c.id or f"call_{uuid.uuid4().hex[:24]}", name=c.name, arguments="".join(c.arguments))
            for _, c in sorted(self.calls.items())
        ]
        return LLMResponse(
            content="".join(self.content),
            tool_calls=calls,
            reasoning="".join(self.reasoning) or None,
            finish_reason=self.finish_reason,
        )


class OpenAILLM:
    """Streamed chat completions from an OpenAI-compatible endpoint (see module doc)."""

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        streaming: bool = True,
    ) -> None:
        """Resolve settings now (bad env values raise LLMError); connect later.

        ``timeout``/``max_retries`` of None read the environment (see the
        module doc). ``streaming=False`` sends one non-streamed request, for
        servers that cannot stream tool calls.
        """
        self.model = model or os.environ.get("MYAGENT_MODEL") or DEFAULT_MODEL
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key and not self.base_url:
            raise LLMError("no LLM credentials: set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server")
        self._api_key = key or LOCAL_API_KEY
        if timeout is None:
            timeout = _env_float("MYAGENT_LLM_TIMEOUT", DEFAULT_TIMEOUT)
        if max_retries is None:
            max_retries = _env_int("MYAGENT_LLM_MAX_RETRIES", DEFAULT_MAX_RETRIES)
        if not timeout > 0 or max_retries < 0:
            raise ValueError("timeout must be > 0 and max_retries >= 0")
        self.timeout: float = timeout
        self.max_retries: int = max_retries
        self.streaming = streaming
        self.name = f"openai:{self.model}"
        self._client: openai.AsyncOpenAI | None = None
        self._client_owner: tuple[int, asyncio.AbstractEventLoop] | None = None

    def __repr__(self) -> str:
        return f"OpenAILLM(model={self.model!r}, base_url={safe_url(self.base_url)!r})"

    def _get_client(self) -> openai.AsyncOpenAI:
        # Created lazily and per (process, event loop): the process may fork
        # after import, and run() helpers may use a fresh loop per call, while
        # the SDK's connection pool is bound to the loop it first ran on.
        owner = (os.getpid(), asyncio.get_running_loop())
        if self._client is None or self._client_owner != owner:
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self._sdk_timeout(),
                max_retries=self.max_retries,
            )
            self._client_owner = owner
            logger.debug("created OpenAI client for %s", safe_url(self.base_url))
        return self._client

    def _sdk_timeout(self) -> openai.Timeout:
        return openai.Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT))

    async def aclose(self) -> None:
        """Close the connection pool; call it before a short-lived loop ends.

        Safe to call twice. A pool created on another (possibly closed) loop or
        in the parent process is only dropped: it cannot be closed from here.
        """
        client, owner = self._client, self._client_owner
        self._client = self._client_owner = None
        if client is not None and owner == (os.getpid(), asyncio.get_running_loop()):
            await client.close()

    def _log_failure(self, phase: str, exc: BaseException) -> None:
        # SDK errors are expected (endpoint down, 5xx) and reach the user as
        # LLMError; anything else is a bug here or in the SDK and deserves a trace.
        level = logging.DEBUG if isinstance(exc, openai.OpenAIError) else logging.WARNING
        logger.log(level, "LLM %s to %s failed", phase, safe_url(self.base_url), exc_info=True)

    def _error(self, exc: BaseException) -> LLMError:
        return map_openai_error(exc, url=self.base_url, attempts=self.max_retries + 1, api_key=self._api_key)

    async def _open(self, messages: list[dict], tools: list[dict]) -> Any:
        """Send the request; one deadline covers every attempt and backoff."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "stream": self.streaming}
        if tools:  # OpenAI rejects an empty tools list
            kwargs["tools"] = tools
        logger.debug("%s: %d messages, %d tools", self.name, len(messages), len(tools))
        try:
            async with asyncio.timeout(self.timeout):
                return await self._get_client().chat.completions.create(**kwargs)
        except TimeoutError:
            where = safe_url(self.base_url)
            raise LLMError(f"LLM endpoint {where} did not respond within {self.timeout} s") from None
        except Exception as exc:  # every failure becomes one user-safe error
            self._log_failure("request", exc)
            raise self._error(exc) from exc

    async def stream(
        self, messages: list[dict], tools: list[dict]
    ) -> AsyncIterator[TextDelta | LLMResponse]:
        """Yield content deltas as they arrive, then the assembled LLMResponse."""
        result = await self._open(messages, tools)
        if not self.streaming:
            response = self._from_completion(result)
            if response.content:
                yield TextDelta(response.content)
            yield response
            return
        assembler = _StreamAssembler()
        try:
            async with result as chunks:
                async for chunk in chunks:
                    for text in self._consume(assembler, chunk):
                        yield TextDelta(text)
        except LLMError:
            raise
        except openai.APIConnectionError as exc:
            # Not retried: the caller has already shown part of the answer.
            logger.debug("LLM stream interrupted", exc_info=True)
            stalled = f" (no data for {self.timeout} s)" if isinstance(exc, openai.APITimeoutError) else ""
            raise LLMError(f"LLM stream from {safe_url(self.base_url)} was interrupted{stalled}") from exc
        except Exception as exc:
            self._log_failure("stream", exc)
            raise self._error(exc) from exc
        yield assembler.response()

    @staticmethod
    def _consume(assembler: _StreamAssembler, chunk: Any) -> list[str]:
        texts: list[str] = []
        for choice in chunk.choices or []:  # usage-only chunks have no choices
            if choice.index not in (0, None):
                continue
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    assembler.content.append(delta.content)
                    texts.append(delta.content)
                assembler.add_reasoning(delta)
                for tool_delta in delta.tool_calls or []:
                    assembler.add_tool_delta(tool_delta)
            if choice.finish_reason:
                assembler.finish_reason = choice.finish_reason
        return texts

    @staticmethod
    def _from_completion(completion: Any) -> LLMResponse:
        if not completion.choices:
            raise LLMError("LLM returned no choices")
        choice = completion.choices[0]
        message = choice.message
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "")
            for c in message.tool_calls or []
            if getattr(c, "function", None) is not None
        ]
        reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
        return LLMResponse(
            content=message.content or "",
            tool_calls=calls,
            reasoning=reasoning if isinstance(reasoning, str) else None,
            finish_reason=choice.finish_reason,
        )
