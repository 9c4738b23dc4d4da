"""Spans of the agent runtime, after the OpenTelemetry GenAI semantic conventions.

One turn in a sandbox is one span tree, the child of the front's turn span (its W3C
``traceparent`` comes with the turn op)::

    invoke_agent {agent}    INTERNAL  the turn; outcome: the terminal event, error.type its code
      chat {model}          CLIENT    one LLM request: gen_ai.request.model / response.model,
                                      gen_ai.usage.input_tokens / output_tokens (when the provider
                                      reports them), gen_ai.response.time_to_first_chunk (s),
                                      finish reasons, server.address, error.type
      execute_tool {name}   INTERNAL  one tool call: gen_ai.tool.name / call.id,
                                      myagent.tool.status (success | failed), error.type

Off (no provider started in this process: :mod:`myagent.otel`), every hook returns the
stream it was given or a shared no-op object: a constant check per turn, LLM request and
tool call. On, the turn's span is the current OpenTelemetry context of the turn's task, so
spans that agent code makes nest under it, and :class:`LogContext` puts the trace id on the
log lines written meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any, AsyncIterator, Mapping
from urllib.parse import urlsplit

from myagent import otel

from .events import ERROR, FINAL_ANSWER
from .llm.base import LLMResponse

__all__ = ["NO_TRACE", "LogContext", "current_chat", "llm_stream", "start", "start_turn", "stop", "tool_call"]

# A stopping sandbox gets --kill-grace (1 s by default) from the stop op to SIGTERM, and may
# spend up to 1 s of it on cancelled turns: its flush must fit in what is left.
SANDBOX_FLUSH_TIMEOUT = 0.5
MAX_STATUS_TEXT = 200  # characters of an error text kept as a span's status description
_NOT_FAILURES = frozenset({"CANCELLED", "SESSION_CLOSED"})  # interruptions somebody asked for

_CHAT: ContextVar["_ChatStream | None"] = ContextVar("myagent_chat_span", default=None)
_TURN: ContextVar["_TurnTrace | None"] = ContextVar("myagent_turn_trace", default=None)


def start() -> bool:
    """Set up this sandbox's exporter (after the fork) if the environment asks for traces."""
    return otel.start("sandbox") is not None


def stop() -> None:
    """Flush this sandbox's last spans, within SANDBOX_FLUSH_TIMEOUT."""
    otel.stop(SANDBOX_FLUSH_TIMEOUT)


# -- the turn --------------------------------------------------------------------------


class _NoTrace:
    """Tracing is off: every hook does nothing."""

    meta: Mapping[str, str] = {}

    def stamp(self, event: Any) -> None:
        pass

    def ended(self, code: str) -> Mapping[str, str]:
        return self.meta

    def end(self) -> None:
        pass

    def __enter__(self) -> "_NoTrace":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def outcome(self, result: Any, refused: str | None) -> None:
        pass


NO_TRACE = _NoTrace()


def start_turn(agent_name: str, sid: str, turn_id: str, traceparent: str | None) -> Any:
    """The turn's span, current in the calling task until ``end()``; NO_TRACE when off.

    ``stamp(event)`` puts ``trace_id`` on a terminal agent event's metadata and records the
    outcome; ``ended(code)`` records an interruption and returns the metadata to add to it.
    """
    tracer = otel.tracer()
    if tracer is None:
        return NO_TRACE
    return _TurnTrace(tracer, agent_name, sid, turn_id, traceparent)


class _TurnTrace:
    def __init__(self, tracer: Any, agent_name: str, sid: str, turn_id: str, traceparent: str | None) -> None:
        from opentelemetry import context, trace

        self.sid, self.turn_id = sid, turn_id
        self.span = tracer.start_span(
            f"invoke_agent {agent_name}", context=otel.parent_context(traceparent), kind=trace.SpanKind.INTERNAL,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent_name,
                        "gen_ai.conversation.id": sid, "myagent.turn.id": turn_id})
        self.trace_id = otel.trace_id(self.span)
        self.meta: Mapping[str, str] = {"trace_id": self.trace_id} if self.trace_id else {}
        self._token = context.attach(trace.set_span_in_context(self.span))
        self._turn_token = _TURN.set(self)

    def stamp(self, event: Any) -> None:
        if event.kind == FINAL_ANSWER:
            event.metadata.update(self.meta)
        elif event.kind == ERROR:
            event.metadata.update(self.meta)
            _fail(self.span, str(event.metadata.get("error_code", "ERROR")), event.content)

    def ended(self, code: str) -> Mapping[str, str]:
        self.span.set_attribute("myagent.turn.interrupted", code)
        if code in _NOT_FAILURES:
            self.span.set_attribute("error.type", code)
        else:  # a timeout, a shutdown, a bug: not what the user asked for
            _fail(self.span, code, "")
        return self.meta

    def end(self) -> None:
        from opentelemetry import context

        _TURN.reset(self._turn_token)
        context.detach(self._token)
        self.span.end()


# -- LLM requests ----------------------------------------------------------------------


def llm_stream(stream: AsyncIterator[Any], llm: Any) -> AsyncIterator[Any]:
    """``stream`` (one LLM request) inside a ``chat {model}`` span; ``stream`` itself when off."""
    tracer = otel.tracer()
    if tracer is None:
        return stream
    return _ChatStream(tracer, stream, llm)


def current_chat() -> "_ChatStream | None":
    """The LLM request span a provider is streaming for, to :meth:`~_ChatStream.observe` its
    raw responses (model, usage, first chunk); None when tracing is off."""
    return _CHAT.get()


class _ChatStream:
    """An LLM stream inside its span: the span is current while the provider runs (between
    items), ends with the stream, and records what the items and raw chunks say."""

    def __init__(self, tracer: Any, inner: AsyncIterator[Any], llm: Any) -> None:
        from opentelemetry import trace

        name = str(getattr(llm, "name", "") or type(llm).__name__)
        provider = name.partition(":")[0] or name
        model = str(getattr(llm, "model", None) or name)
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
                                      "gen_ai.system": provider, "gen_ai.request.model": model}
        base_url = getattr(llm, "base_url", None)
        if isinstance(base_url, str) and base_url:
            parts = urlsplit(base_url)
            if parts.hostname:
                attributes["server.address"] = parts.hostname
                if parts.port:
                    attributes["server.port"] = parts.port
        self.inner = inner
        self.span = tracer.start_span(f"chat {model}", kind=trace.SpanKind.CLIENT, attributes=attributes)
        self.context = trace.set_span_in_context(self.span)
        self.began = time.perf_counter()
        self.first: float | None = None
        self.finish_reasons: list[str] = []
        self.found: dict[str, Any] = {}  # attributes the response tells, set at the end in one call
        self.done = False

    def __aiter__(self) -> "_ChatStream":
        return self

    async def __anext__(self) -> Any:
        if self.first is not None:  # the request is out: the provider reads its stream
            try:
                item = await self.inner.__anext__()
            except BaseException as exc:
                self._end(None if isinstance(exc, StopAsyncIteration) else exc)
                raise
        else:
            item = await self._start()
            self.first_chunk()
        if isinstance(item, LLMResponse) and item.finish_reason and not self.finish_reasons:
            self.finish_reasons.append(item.finish_reason)
        return item

    async def _start(self) -> Any:
        """The first item: the provider sends the request now, with this span current (for
        :func:`current_chat`, and for spans an instrumented HTTP client would make)."""
        from opentelemetry import context

        chat = _CHAT.set(self)
        token = context.attach(self.context)
        try:
            return await self.inner.__anext__()
        except BaseException as exc:
            self._end(None if isinstance(exc, StopAsyncIteration) else exc)
            raise
        finally:
            context.detach(token)
            _CHAT.reset(chat)

    async def aclose(self) -> None:
        try:
            close = getattr(self.inner, "aclose", None)
            if close is not None:
                await close()
        finally:
            if not self.done:  # abandoned mid-stream: the turn was cancelled or failed elsewhere
                self.found["error.type"] = "cancelled"
                self._end(None)

    def first_chunk(self) -> None:
        if self.first is None:
            self.first = self.found["gen_ai.response.time_to_first_chunk"] = time.perf_counter() - self.began

    def observe(self, chunk: Any) -> None:
        """One raw response object of an OpenAI-compatible API (a stream chunk or a whole
        completion): response model and id, token usage, finish reasons."""
        if not isinstance(chunk, Mapping):
            return
        if self.first is None:
            self.first_chunk()
        found = self.found
        model = chunk.get("model")
        if isinstance(model, str) and model and "gen_ai.response.model" not in found:
            found["gen_ai.response.model"] = model
            response_id = chunk.get("id")
            if isinstance(response_id, str) and response_id:
                found["gen_ai.response.id"] = response_id
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            for key, attribute in (("prompt_tokens", "gen_ai.usage.input_tokens"),
                                   ("completion_tokens", "gen_ai.usage.output_tokens")):
                value = usage.get(key)
                if type(value) is int:
                    found[attribute] = value
        for choice in chunk.get("choices") or ():
            reason = choice.get("finish_reason") if isinstance(choice, Mapping) else None
            if isinstance(reason, str) and reason and reason not in self.finish_reasons:
                self.finish_reasons.append(reason)

    def _end(self, exc: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        if self.finish_reasons:
            self.found["gen_ai.response.finish_reasons"] = self.finish_reasons
        self.span.set_attributes(self.found)
        if exc is not None:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            kind = "cancelled" if isinstance(exc, (GeneratorExit, asyncio.CancelledError)) else type(cause).__name__
            _fail(self.span, kind, str(exc))
        self.span.end()


# -- tool calls ------------------------------------------------------------------------


def tool_call(name: str, call_id: str) -> Any:
    """A context manager: the ``execute_tool {name}`` span, current while the tool runs;
    ``outcome(result, refused)`` records how it ended. NO_TRACE when off."""
    tracer = otel.tracer()
    if tracer is None:
        return NO_TRACE
    return _ToolSpan(tracer, name, call_id)


class _ToolSpan:
    def __init__(self, tracer: Any, name: str, call_id: str) -> None:
        self.tracer, self.name, self.call_id = tracer, name, call_id

    def __enter__(self) -> "_ToolSpan":
        from opentelemetry import context, trace

        self.span = self.tracer.start_span(
            f"execute_tool {self.name}", kind=trace.SpanKind.INTERNAL,
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": self.name,
                        "gen_ai.tool.call.id": self.call_id, "gen_ai.tool.type": "function"})
        self._token = context.attach(trace.set_span_in_context(self.span))
        return self

    def outcome(self, result: Any, refused: str | None) -> None:
        """``refused``: why the call was not executed (unknown tool, invalid arguments, denied,
        over the per-step limit), else None; ``result.error`` set: the tool failed."""
        failed = refused is not None or getattr(result, "error", None) is not None
        self.span.set_attribute("myagent.tool.status", "failed" if failed else "success")
        if refused is not None:
            _fail(self.span, "refused", refused)
        elif failed:
            _fail(self.span, "tool_error", str(result.error))

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        from opentelemetry import context

        context.detach(self._token)
        if exc is not None:
            self.span.set_attribute("myagent.tool.status", "failed")
            _fail(self.span, "cancelled" if isinstance(exc, asyncio.CancelledError) else type(exc).__name__, "")
        self.span.end()


# -- logs ----------------------------------------------------------------------------------


class LogContext(logging.Filter):
    """Puts the running turn's session_id, turn_id and trace_id (and the current span_id) on
    the records logged in its task, for the JSON log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        turn = _TURN.get()
        if turn is not None:
            if getattr(record, "session_id", None) is None:
                record.session_id = turn.sid
            if getattr(record, "turn_id", None) is None:
                record.turn_id = turn.turn_id
            if turn.trace_id and getattr(record, "trace_id", None) is None:
                from opentelemetry import trace

                record.trace_id = turn.trace_id
                record.span_id = format(trace.get_current_span().get_span_context().span_id, "016x")
        return True


def _fail(span: Any, kind: str, text: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, text[:MAX_STATUS_TEXT] or None))
