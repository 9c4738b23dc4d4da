"""The front's span of each turn (myagent.supervisor.tracing) over the real Turns and Relay.

The turn op carries the span's traceparent; the span ends when the terminal event was
delivered, whoever sent it; a turn the front ends itself names its trace in the metadata.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from myagent.protocol.errors import ErrorCode
from myagent.supervisor.tracing import TurnTraces

from .fakes import Core, FakeConnection, pipe


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def setup(exporter: InMemorySpanExporter, traced: bool = True):
    core = Core()
    sandbox = core.add_sandbox()
    conn = FakeConnection()
    session = await core.session(conn)
    if traced:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        core.turns.traces = TurnTraces(provider.get_tracer("test"), lambda: "weather")
    return core, sandbox, conn, session


async def test_untraced_turn_ops_carry_no_traceparent(exporter):
    core, sandbox, conn, session = await setup(exporter, traced=False)
    core.turns.submit(session, "hello", None, "enqueue")
    assert "tp" not in pipe(sandbox).ops("turn")[0] and session.turn.trace is None


async def test_the_turn_op_names_the_turns_span_which_ends_with_its_terminal_event(exporter):
    core, sandbox, conn, session = await setup(exporter)
    core.turns.submit(session, "hello", None, "enqueue")
    turn = session.turn
    context = turn.trace.get_span_context()
    [op] = pipe(sandbox).ops("turn")
    assert op["tp"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert exporter.get_finished_spans() == ()  # open while the turn runs
    core.finish(sandbox, session)
    [span] = exporter.get_finished_spans()
    assert span.name == "turn weather" and span.kind == SpanKind.SERVER and span.parent is None
    assert span.attributes["gen_ai.conversation.id"] == session.id
    assert span.attributes["myagent.turn.id"] == turn.id
    assert span.attributes["myagent.connection.id"] == conn.id
    assert span.attributes["client.address"] == conn.remote
    assert span.attributes["myagent.turn.outcome"] == "final_answer"
    assert span.status.status_code == StatusCode.UNSET and turn.trace is None


async def test_each_turn_is_a_trace_of_its_own(exporter):
    core, sandbox, conn, session = await setup(exporter)
    for text in ("one", "two"):
        core.turns.submit(session, text, None, "enqueue")
        core.finish(sandbox, session)
    first, second = exporter.get_finished_spans()
    assert first.context.trace_id != second.context.trace_id


async def test_a_turn_the_front_ends_names_its_trace_and_fails_its_span(exporter):
    core, sandbox, conn, session = await setup(exporter)
    core.turns.submit(session, "hello", None, "enqueue")
    trace_id = f"{session.turn.trace.get_span_context().trace_id:032x}"
    core.turns.abort(session, ErrorCode.SANDBOX_CRASHED)
    [interrupted] = conn.events("agent.interrupted")
    assert interrupted["metadata"]["trace_id"] == trace_id
    [span] = exporter.get_finished_spans()
    assert span.attributes["myagent.turn.outcome"] == "interrupted"
    assert span.attributes["error.type"] == "SANDBOX_CRASHED" and span.status.status_code == StatusCode.ERROR


async def test_a_cancel_the_user_asked_for_is_not_a_failure(exporter):
    core, sandbox, conn, session = await setup(exporter)
    core.turns.submit(session, "hello", None, "enqueue")
    core.event(sandbox, session, "agent.interrupted", "cancelled", reason="CANCELLED", error_code="CANCELLED",
               recoverable=True)
    [span] = exporter.get_finished_spans()
    assert span.attributes["error.type"] == "CANCELLED" and span.status.status_code == StatusCode.UNSET
