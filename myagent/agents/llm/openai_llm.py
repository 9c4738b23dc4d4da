"""OpenAILLM: any OpenAI-compatible chat-completions endpoint, streamed.

Configuration (constructor arguments win over the environment):

* ``model``: ``MYAGENT_MODEL``, default ``gpt-4o-mini``;
* ``base_url``: ``OPENAI_BASE_URL``, default OpenAI's endpoint;
* ``api_key``: ``OPENAI_API_KEY``; ``not-needed`` when only a base_url is set,
  since local servers ignore it;
* ``timeout``: ``MYAGENT_LLM_TIMEOUT`` seconds, default 60;
* ``max_retries``: ``MYAGENT_LLM_MAX_RETRIES``, default 2;
* ``max_connections``: ``MYAGENT_LLM_MAX_CONNECTIONS``, default 1000: connections to the
  endpoint one process keeps at most (shared by all its agents, all kept alive);
* the SDK's HTTP client: ``MYAGENT_LLM_HTTP`` ``aiohttp`` or ``httpx``; by default aiohttp
  when installed (``pip install 'openai[aiohttp]'``: far cheaper with many requests in
  flight), else httpx.
* ``stream_usage``: ``MYAGENT_LLM_STREAM_USAGE``, default on: streamed requests ask for token
  usage (``stream_options.include_usage``; the endpoint sends it in one last chunk). Turn it
  off (``0``) for a server that rejects the option; its usage is then unknown.

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

The request path. Every request goes through the official SDK's client (HTTP, keep-alive
pool, auth, retries, error classes), shared by all agents of the process. Its body is joined
from JSON encoded once per message (the agent keeps its history so, see :meth:`stream_json`)
and handed to the SDK's generic ``post`` as bytes, and stream chunks come back as the dicts
the SDK decoded: the SDK's typed path re-walked the whole history with type introspection on
every request and built a pydantic model per chunk, which made CPU per request grow with the
conversation (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Sequence

import openai
import orjson

from .. import tracing
from ..usage import TokenUsage
from .base import LLMError, LLMResponse, TextDelta, ToolCall
from .openai_client import DEFAULT_MAX_CONNECTIONS, ClientKey, close_clients, http_transport, shared_client
from .openai_errors import map_openai_error, safe_url

__all__ = ["OpenAILLM", "DEFAULT_MODEL", "DEFAULT_TIMEOUT", "DEFAULT_MAX_RETRIES"]

logger = logging.getLogger("myagent.agents.llm.openai")

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
CONNECT_TIMEOUT = 5.0
LOCAL_API_KEY = "not-needed"
CHAT_PATH = "/chat/completions"
# The SDK decodes the SSE stream (and raises on error events) and hands every chunk over as
# its decoded dict: building a pydantic ChatCompletionChunk per chunk cost more CPU than
# everything else of a request (see docs/benchmarks.md).
_CHUNKS = openai.AsyncStream[object]
_OFF = ("0", "false", "no", "off")


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
    """Accumulate chunk deltas (decoded JSON objects) into one LLMResponse."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None

    def add_tool_delta(self, delta: Any) -> None:
        # OpenAI sends id and name once, then argument pieces under the same
        # index; servers that omit the index get one call per new id.
        if not isinstance(delta, Mapping):
            return
        index = delta.get("index")
        call_id = delta.get("id")
        if not isinstance(index, int):
            index = len(self.calls) if call_id or not self.calls else max(self.calls)
        call = self.calls.setdefault(index, _PartialCall())
        if isinstance(call_id, str) and call_id and not call.id:
            call.id = call_id
        function = delta.get("function")
        if isinstance(function, Mapping):
            name, arguments = function.get("name"), function.get("arguments")
            if isinstance(name, str) and name and not call.name:
                call.name = name
            if isinstance(arguments, str) and arguments:
                call.arguments.append(arguments)

    def add_reasoning(self, delta: Mapping[str, Any]) -> None:
        # Not in the OpenAI schema: DeepSeek/vLLM send reasoning_content,
        # OpenRouter sends reasoning.
        for key in ("reasoning_content", "reasoning"):
            piece = delta.get(key)
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
            usage=self.usage,
        )


class OpenAILLM:
    """Streamed chat completions from an OpenAI-compatible endpoint (see module doc).

    Stateless between requests: one instance may serve every session of a process, and
    every instance with the same settings shares one SDK client (one connection pool) per
    process and event loop (:mod:`.openai_client`).
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        streaming: bool = True,
        stream_usage: bool | None = None,
    ) -> None:
        """Resolve settings now (bad env values raise LLMError); connect later.

        ``timeout``/``max_retries`` of None read the environment (see the
        module doc). ``streaming=False`` sends one non-streamed request, for
        servers that cannot stream tool calls. ``stream_usage`` of None reads
        ``MYAGENT_LLM_STREAM_USAGE`` (default on).
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
        connections = _env_int("MYAGENT_LLM_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)
        if connections < 1:
            raise LLMError("MYAGENT_LLM_MAX_CONNECTIONS must be at least 1")
        self._key = ClientKey(self.base_url, self._api_key, timeout, min(timeout, CONNECT_TIMEOUT), max_retries,
                              connections, http_transport())
        # The constant head of every request body, encoded once.
        if stream_usage is None:
            stream_usage = os.environ.get("MYAGENT_LLM_STREAM_USAGE", "1").strip().lower() not in _OFF
        self.stream_usage = stream_usage
        stream = b',"stream":true' if streaming else b',"stream":false'
        if streaming and stream_usage:
            stream += b',"stream_options":{"include_usage":true}'
        self._head = b'{"model":' + orjson.dumps(self.model) + stream

    def __repr__(self) -> str:
        return f"OpenAILLM(model={self.model!r}, base_url={safe_url(self.base_url)!r})"

    def _get_client(self) -> openai.AsyncOpenAI:
        return shared_client(self._key)

    async def aclose(self) -> None:
        """Close this endpoint's shared client on the running loop; call it before a
        short-lived loop ends (``Agent.run()`` does). Safe to call twice."""
        await close_clients(self._key)

    def _log_failure(self, phase: str, exc: BaseException) -> None:
        # SDK errors are expected (endpoint down, 5xx) and reach the user as
        # LLMError; anything else is a bug here or in the SDK and deserves a trace.
        level = logging.DEBUG if isinstance(exc, openai.OpenAIError) else logging.WARNING
        logger.log(level, "LLM %s to %s failed", phase, safe_url(self.base_url), exc_info=True)

    def _error(self, exc: BaseException) -> LLMError:
        return map_openai_error(exc, url=self.base_url, attempts=self.max_retries + 1, api_key=self._api_key)

    def _body(self, messages: Sequence[bytes], tools: bytes) -> bytes:
        """The request body, joined from JSON already encoded: nothing is serialised twice,
        and no per-message Python runs however long the history (a join copies bytes)."""
        tools_part = b',"tools":' + tools if tools and tools != b"[]" else b""  # OpenAI rejects []
        return b"".join((self._head, tools_part, b',"messages":[', b",".join(messages), b"]}"))

    async def _open(self, body: bytes, count: int) -> Any:
        """Send the request; one deadline covers every attempt and backoff.

        The SDK's generic ``post`` with the body as ``content`` (bytes) is the same request
        ``chat.completions.create`` makes, with the SDK's HTTP client, auth, retries and
        errors, minus its per-message transform of the arguments (which walked the whole
        history with type introspection on every request).
        """
        logger.debug("%s: %d messages, %d bytes", self.name, count, len(body))
        try:
            async with asyncio.timeout(self.timeout):
                if self.streaming:
                    return await self._get_client().post(
                        CHAT_PATH, cast_to=object, content=body, stream=True, stream_cls=_CHUNKS)
                return await self._get_client().post(CHAT_PATH, cast_to=object, content=body)
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
        try:
            encoded = [orjson.dumps(m) for m in messages]
            tools_json = orjson.dumps(tools) if tools else b""
        except TypeError as exc:
            raise LLMError(f"the conversation cannot be sent as JSON: {exc}") from None
        async with aclosing(self.stream_json(encoded, tools_json)) as items:
            async for item in items:
                yield item

    async def stream_json(
        self, messages: Sequence[bytes], tools: bytes
    ) -> AsyncIterator[TextDelta | LLMResponse]:
        """:meth:`stream` for messages and tools already encoded as JSON (one object per
        message; ``tools`` a JSON array, or empty for none). The agent keeps its history so."""
        trace = tracing.current_chat()  # the request's span when tracing is on, else None
        result = await self._open(self._body(messages, tools), len(messages))
        if not self.streaming:
            try:
                if trace is not None:
                    trace.observe(result)
                response = self._from_completion(result)
            except LLMError:
                raise
            except Exception as exc:
                self._log_failure("response", exc)
                raise self._error(exc) from exc
            if response.content:
                yield TextDelta(response.content)
            yield response
            return
        assembler = _StreamAssembler()
        try:
            async with result as chunks:
                async for chunk in chunks:
                    if trace is not None:
                        trace.observe(chunk)
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
        if not isinstance(chunk, Mapping):
            return texts
        usage = chunk.get("usage")
        if usage is not None:  # OpenAI: null on every chunk but the last (choices [], usage set)
            assembler.usage = TokenUsage.from_openai(usage)
        choices = chunk.get("choices")
        for choice in choices or ():  # usage-only chunks have no choices
            if not isinstance(choice, Mapping) or choice.get("index") not in (0, None):
                continue
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    assembler.content.append(content)
                    texts.append(content)
                assembler.add_reasoning(delta)
                for tool_delta in delta.get("tool_calls") or ():
                    assembler.add_tool_delta(tool_delta)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                assembler.finish_reason = finish
        return texts

    @staticmethod
    def _from_completion(completion: Any) -> LLMResponse:
        choices = completion.get("choices") if isinstance(completion, Mapping) else None
        if not choices or not isinstance(choices[0], Mapping):
            raise LLMError("LLM returned no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, Mapping):
            raise LLMError("LLM returned a choice without a message")
        calls = []
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                calls.append(ToolCall(id=str(call.get("id") or ""), name=str(function.get("name") or ""),
                                      arguments=function.get("arguments") or ""))
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        content = message.get("content")
        return LLMResponse(
            content=content if isinstance(content, str) else "",
            tool_calls=calls,
            reasoning=reasoning if isinstance(reasoning, str) else None,
            finish_reason=choice.get("finish_reason"),
            usage=TokenUsage.from_openai(completion.get("usage")),
        )
