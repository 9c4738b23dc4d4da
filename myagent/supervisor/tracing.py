"""The front's half of a turn's trace: the root span, from the turn's start to its terminal event.

``turn {agent}`` (SERVER) is what the client's connection saw of the turn: from the moment
the front sent it to a sandbox until the terminal event was delivered, whoever ended it (the
sandbox, or the front itself when the sandbox was lost). Its W3C ``traceparent`` travels in
the turn op, and the sandbox's ``invoke_agent`` span (:mod:`myagent.agents.tracing`) is its
child. Attributes: gen_ai.conversation.id (the session), myagent.turn.id,
myagent.connection.id, client.address, gen_ai.agent.name; at the end myagent.turn.outcome
(the terminal event) and error.type (its error code, if any).

Built by the server only when :func:`myagent.otel.start` made a tracer; otherwise the turn
code holds None and each hook is one ``is None`` check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from myagent import otel
from myagent.protocol import events as ev
from myagent.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from myagent.supervisor.sessions import Session, Turn

__all__ = ["TurnTraces", "turn_traces"]

# Interruptions that are what somebody asked for, not failures.
_NOT_FAILURES = frozenset({ErrorCode.CANCELLED.value, ErrorCode.SESSION_CLOSED.value})


class TurnTraces:
    """Starts and ends the front's span of each turn."""

    def __init__(self, tracer: Any, agent_name: Callable[[], str]) -> None:
        self.tracer = tracer
        self.agent_name = agent_name

    def start(self, session: "Session", turn: "Turn") -> None:
        """Open ``turn``'s span, kept on ``turn.trace`` until :meth:`end`."""
        from opentelemetry import context, trace

        conn = session.connection
        attributes: dict[str, Any] = {"gen_ai.conversation.id": session.id, "myagent.turn.id": turn.id,
                                      "gen_ai.agent.name": self.agent_name()}
        if conn is not None:
            attributes["myagent.connection.id"] = conn.id
            if conn.remote:
                attributes["client.address"] = conn.remote
        # A root span: one trace per turn, whatever context the event loop happens to hold.
        turn.trace = self.tracer.start_span(f"turn {attributes['gen_ai.agent.name']}", context=context.Context(),
                                            kind=trace.SpanKind.SERVER, attributes=attributes)

    @staticmethod
    def traceparent(turn: "Turn") -> str:
        """The W3C traceparent that makes the sandbox's span of ``turn`` a child of the front's."""
        return otel.traceparent(turn.trace)

    @staticmethod
    def trace_id(turn: "Turn") -> dict[str, str]:
        """``{"trace_id": ...}`` for metadata and log extras, or {} (untraced or unsampled)."""
        found = otel.trace_id(turn.trace) if turn.trace is not None else None
        return {"trace_id": found} if found else {}

    @staticmethod
    def end(turn: "Turn", event: str, code: str | None) -> None:
        """Close ``turn``'s span: its terminal ``event`` was delivered (``code``: its error code)."""
        from opentelemetry.trace import Status, StatusCode

        span, turn.trace = turn.trace, None
        span.set_attribute("myagent.turn.outcome", event.removeprefix("agent."))
        if code is not None:
            span.set_attribute("error.type", code)
            if event == ev.AGENT_ERROR or code not in _NOT_FAILURES:
                span.set_status(Status(StatusCode.ERROR))
        span.end()


def turn_traces(agent_name: Callable[[], str]) -> TurnTraces | None:
    """The server's TurnTraces when traces are exported (the front's provider started), else None."""
    tracer = otel.start("front")
    return TurnTraces(tracer, agent_name) if tracer is not None else None
