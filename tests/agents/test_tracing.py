"""Spans of the agent runtime (myagent.agents.tracing), recorded by the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from myagent import otel, tool
from myagent.agents import tracing
from myagent.agents.agent import create_react_agent
from myagent.agents.events import ERROR, FINAL_ANSWER
from myagent.agents.llm.base import LLMError

from .fakes import FakeLLM, Step, answer, call, use


@tool
async def weather(city: str) -> str:
    """Weather for a city."""
    return f"{city}: sunny"


@tool
async def explode() -> str:
    """Always raises."""
    raise RuntimeError("boom")


@pytest.fixture
def spans(monkeypatch):
    """Tracing on, into memory: the finished spans, by name."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(otel, "_tracer", provider.get_tracer("test"))

    def finished() -> dict[str, list]:
        out: dict[str, list] = {}
        for span in exporter.get_finished_spans():
            out.setdefault(span.name, []).append(span)
        return out

    return finished


def parent_traceparent() -> tuple[str, int]:
    """A traceparent as the front sends it, and its trace id."""
    span = otel.tracer().start_span("turn test")
    span.end()
    return otel.traceparent(span), span.get_span_context().trace_id


async def run_turn(agent, text: str, traceparent: str | None = None):
    trace = tracing.start_turn(agent.name, "s1", "t1", traceparent)
    try:
        events = []
        async for event in agent.astream(text):
            trace.stamp(event)
            events.append(event)
        return events
    finally:
        trace.end()


def test_off_every_hook_is_a_no_op():
    assert otel.tracer() is None
    stream = object()
    assert tracing.llm_stream(stream, FakeLLM()) is stream
    assert tracing.tool_call("x", "c1") is tracing.NO_TRACE
    trace = tracing.start_turn("a", "s", "t", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert trace is tracing.NO_TRACE and trace.ended("CANCELLED") == {}
    assert tracing.current_chat() is None


async def test_a_turn_is_one_tree_under_the_fronts_span(spans):
    llm = FakeLLM(use(call("weather", {"city": "Paris"}, id="call_1")), answer("It is sunny."))
    agent = create_react_agent("tracer", tools=[weather], llm=llm)
    traceparent, trace_id = parent_traceparent()
    events = await run_turn(agent, "weather?", traceparent)
    final = events[-1]
    assert final.kind == FINAL_ANSWER and final.metadata["trace_id"] == format(trace_id, "032x")
    done = spans()
    [front], [turn] = done["turn test"], done["invoke_agent tracer"]
    chats, [tool_span] = done["chat fake"], done["execute_tool weather"]
    assert turn.parent.span_id == front.context.span_id and turn.context.trace_id == trace_id
    assert [c.parent.span_id for c in chats] == [turn.context.span_id] * 2
    assert tool_span.parent.span_id == turn.context.span_id
    assert turn.attributes["gen_ai.conversation.id"] == "s1" and turn.attributes["myagent.turn.id"] == "t1"
    assert chats[0].kind == SpanKind.CLIENT and chats[0].attributes["gen_ai.operation.name"] == "chat"
    assert [c.attributes["gen_ai.response.finish_reasons"] for c in chats] == [("tool_calls",), ("stop",)]
    assert all(c.attributes["gen_ai.response.time_to_first_chunk"] >= 0 for c in chats)
    assert chats[0].end_time <= tool_span.start_time <= tool_span.end_time <= chats[1].start_time
    assert tool_span.attributes["gen_ai.tool.name"] == "weather"
    assert tool_span.attributes["gen_ai.tool.call.id"] == "call_1"
    assert tool_span.attributes["myagent.tool.status"] == "success"
    assert tool_span.status.status_code == StatusCode.UNSET


async def test_without_a_traceparent_the_turn_starts_its_own_trace(spans):
    agent = create_react_agent("tracer", llm=FakeLLM(answer("hi")))
    events = await run_turn(agent, "hello", "not a traceparent")
    [turn] = spans()["invoke_agent tracer"]
    assert turn.parent is None and events[-1].metadata["trace_id"] == format(turn.context.trace_id, "032x")


async def test_refused_and_failed_tool_calls_are_failed_spans(spans):
    llm = FakeLLM(use(call("nope", id="c1"), call("explode", id="c2")), answer("sorry"))
    agent = create_react_agent("tracer", tools=[weather, explode], llm=llm)
    await run_turn(agent, "go")
    done = spans()
    [refused], [failed] = done["execute_tool nope"], done["execute_tool explode"]
    assert refused.attributes["error.type"] == "refused" and refused.attributes["myagent.tool.status"] == "failed"
    assert "Unknown tool" in refused.status.description
    assert failed.attributes["error.type"] == "tool_error" and failed.status.status_code == StatusCode.ERROR


async def test_an_llm_failure_fails_the_chat_and_the_turn(spans):
    agent = create_react_agent("tracer", llm=FakeLLM(Step(error=LLMError("endpoint down"))))
    events = await run_turn(agent, "hello")
    assert events[-1].kind == ERROR and "trace_id" in events[-1].metadata
    done = spans()
    [chat], [turn] = done["chat fake"], done["invoke_agent tracer"]
    assert chat.attributes["error.type"] == "LLMError" and chat.status.description == "endpoint down"
    assert turn.attributes["error.type"] == "LLM_ERROR" and turn.status.status_code == StatusCode.ERROR


async def test_a_cancelled_turn_ends_its_open_chat_span(spans):
    llm = FakeLLM(Step(content="partial", hang=True))
    agent = create_react_agent("tracer", llm=llm)
    trace = tracing.start_turn(agent.name, "s1", "t1", None)

    async def consume() -> None:
        async for _ in agent.astream("hello"):
            pass

    task = asyncio.get_running_loop().create_task(consume())
    await llm.streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trace.ended("CANCELLED") == {"trace_id": trace.trace_id}
    trace.end()
    done = spans()
    [chat], [turn] = done["chat fake"], done["invoke_agent tracer"]
    assert chat.attributes["error.type"] == "cancelled" and chat.end_time is not None
    assert turn.attributes["myagent.turn.interrupted"] == "CANCELLED"


async def test_a_provider_reports_model_usage_and_finish_reasons(spans):
    class Provider:
        name, model, base_url = "openai:m", "m", "http://127.0.0.1:9/v1"

        async def stream(self, messages, tools):
            chat = tracing.current_chat()
            for chunk in ({"id": "r1", "model": "m-2024", "choices": [{"delta": {"content": "hi"}}]},
                          {"choices": [{"delta": {}, "finish_reason": "stop"}]},
                          {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}):
                chat.observe(chunk)
            from myagent.agents.llm.base import LLMResponse, TextDelta

            yield TextDelta("hi")
            yield LLMResponse(content="hi", finish_reason="stop")

    await run_turn(create_react_agent("tracer", llm=Provider()), "hello")
    [chat] = spans()["chat m"]
    attrs = chat.attributes
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "m" and attrs["gen_ai.response.model"] == "m-2024"
    assert attrs["gen_ai.response.id"] == "r1" and attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == 7 and attrs["gen_ai.usage.output_tokens"] == 2
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == 9


async def test_log_lines_written_during_a_turn_carry_its_ids(spans):
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(tracing.LogContext())
    logger = logging.getLogger("myagent.test.tracing")
    logger.addHandler(handler)
    try:
        trace = tracing.start_turn("tracer", "s1", "t1", None)
        logger.warning("inside")
        trace.end()
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = records
    assert (inside.session_id, inside.turn_id, inside.trace_id) == ("s1", "t1", trace.trace_id)
    assert len(inside.span_id) == 16
    assert getattr(outside, "trace_id", None) is None


def test_an_interruption_nobody_asked_for_fails_the_turn_span(spans):
    for code in ("CANCELLED", "TURN_TIMEOUT"):
        trace = tracing.start_turn("tracer", "s1", code, None)
        trace.ended(code)
        trace.end()
    cancelled, timed_out = spans()["invoke_agent tracer"]
    assert cancelled.attributes["error.type"] == "CANCELLED" and cancelled.status.status_code == StatusCode.UNSET
    assert timed_out.attributes["error.type"] == "TURN_TIMEOUT" and timed_out.status.status_code == StatusCode.ERROR
