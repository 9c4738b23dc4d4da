"""Session hosting inside a sandbox process.

One agent instance per session, each turn its own asyncio task. Everything the
agent does goes upstream as pipe frames (:mod:`myagent.wire.ops`): its events,
translated into protocol events here (:mod:`myagent.protocol.translate`), and
every message appended to its history, so the front process can restore the
session elsewhere if this process dies.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson

from myagent.agents import tracing
from myagent.agents.events import TERMINAL_KINDS, TOOL_CALL
from myagent.agents.usage import BudgetExceeded, TurnUsage
from myagent.protocol.errors import ErrorCode
from myagent.protocol.translate import Translator
from myagent.protocol.usage import budget_refusal, zero_usage
from myagent.wire import ops
from myagent.wire.pipe import FramePipe

log = logging.getLogger("myagent.sandbox")


@dataclass(slots=True)
class HostedSession:
    sid: str
    agent: Any
    task: asyncio.Task | None = None
    turn: str | None = None
    cancel_reason: str = ErrorCode.CANCELLED.value
    confirms: dict[str, asyncio.Future] = field(default_factory=dict)
    measured: bool = False  # its astream takes usage= (the runtime's Agent); else its usage is unknown


class SessionHost:
    """Executes the front process's ops against this sandbox's sessions."""

    def __init__(self, factory: Any, *, confirm_timeout: float | None, heartbeat: float,
                 max_history: int = 0, max_tool_result_chars: int = 0) -> None:
        self.factory = factory
        self.max_history = max_history
        self.confirm_timeout = confirm_timeout or None
        self.heartbeat = heartbeat
        self.translate = Translator(max_tool_result_chars)
        self.sessions: dict[str, HostedSession] = {}
        self.pipe: FramePipe | None = None
        self.stopped = asyncio.Event()
        self._handlers = {
            ops.TURN: self._turn,
            ops.CANCEL: self._cancel,
            ops.CONFIRM: self._confirm,
            ops.CLOSE: self._close,
            ops.STOP: self._stop,
        }

    # Frames in ----------------------------------------------------------
    def on_frame(self, body: bytes) -> None:
        try:
            if body[:1] == b"O":
                parts = ops.split_ids(body, 2)
                if parts is None:
                    raise ValueError("malformed open frame")
                self._open(parts[0].decode(), int(parts[1]), parts[2])
                return
            frame = orjson.loads(body)
            handler = self._handlers.get(frame.get("op"))
            if handler is None:
                log.error("unknown op from front process: %.40r", frame.get("op"))
                return
            handler(frame)
        except Exception:  # one bad frame must not take down every session here
            log.exception("failed to handle a frame from the front process")

    def on_lost(self, exc: BaseException | None) -> None:
        # The front process is gone (or closed us): nothing to serve anymore.
        self.stopped.set()

    def send(self, frame: dict) -> None:
        assert self.pipe is not None
        self.pipe.send(frame)

    def _emit(self, sid: str, turn: str, event: tuple[str, bytes]) -> None:
        assert self.pipe is not None
        self.pipe.send_raw(ops.event_frame(sid, turn, event[0], event[1]))

    # Ops ----------------------------------------------------------------
    def _open(self, sid: str, nonce: int, history: bytes) -> None:
        try:
            agent = self.factory.new()
            messages = orjson.loads(history)
            if messages:
                agent.load_history(messages)
        except Exception as exc:
            log.warning("session %s could not be opened: %s", sid, exc, exc_info=True)
            self.send({"op": ops.OPEN_FAILED, "sid": sid, "n": nonce, "error": f"{type(exc).__name__}: {exc}"[:500]})
            return
        old = self.sessions.pop(sid, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        self.sessions[sid] = HostedSession(sid, agent, measured=_takes_usage(agent))
        self.send({"op": ops.OPENED, "sid": sid, "n": nonce})

    def _turn(self, frame: dict) -> None:
        sid, turn = frame["sid"], frame["turn"]
        session = self.sessions.get(sid)
        if session is None:
            self._emit(sid, turn, self.translate.failed(turn, ErrorCode.SESSION_NOT_FOUND,
                                                        "Session is not hosted here.", usage=zero_usage()))
            return
        if session.task is not None:
            self._emit(sid, turn, self.translate.failed(turn, ErrorCode.SESSION_BUSY, "A turn is already running.",
                                                        usage=zero_usage()))
            return
        session.turn = turn
        session.cancel_reason = ErrorCode.CANCELLED.value
        session.task = asyncio.get_running_loop().create_task(
            self._run_turn(session, turn, frame["text"], frame.get("budget"), frame.get("tp")))

    def _cancel(self, frame: dict) -> None:
        session = self.sessions.get(frame["sid"])
        if session is None or session.task is None or session.turn != frame.get("turn", session.turn):
            return
        session.cancel_reason = frame.get("reason") or ErrorCode.CANCELLED.value
        session.task.cancel()

    def _confirm(self, frame: dict) -> None:
        session = self.sessions.get(frame["sid"])
        future = session.confirms.get(frame["step"]) if session else None
        if future is not None and not future.done():
            future.set_result(bool(frame.get("ok")))

    def _close(self, frame: dict) -> None:
        session = self.sessions.pop(frame["sid"], None)
        if session is not None and session.task is not None:
            session.cancel_reason = ErrorCode.SESSION_CLOSED.value
            session.task.cancel()
        self.send({"op": ops.CLOSED, "sid": frame["sid"]})

    def _stop(self, frame: dict) -> None:
        for session in self.sessions.values():
            if session.task is not None:
                session.cancel_reason = ErrorCode.SHUTTING_DOWN.value
                session.task.cancel()
        self.stopped.set()

    # Turns --------------------------------------------------------------
    async def _run_turn(self, session: HostedSession, turn: str, text: str, budget: dict | None = None,
                        traceparent: str | None = None) -> None:
        """``budget``: the turn's token allowance from the front ({tokens, kind, limit, resets_at}), or
        None; ``traceparent``: the front's span of this turn (W3C), when traces are exported."""
        sid = session.sid
        pipe = self.pipe
        assert pipe is not None
        translate = self.translate

        def on_message(message: dict) -> None:
            # The front process records the user's message itself when it starts the turn, so
            # a sandbox that dies inside a tool (os._exit, a segfault) cannot lose it; only what
            # the agent adds (assistant and tool messages) travels up from here.
            if message.get("role") != "user":
                pipe.send_raw(ops.message_frame(sid, turn, orjson.dumps(message, default=str)))

        async def confirm(request: Any) -> bool:
            future = asyncio.get_running_loop().create_future()
            session.confirms[request.step_id] = future
            try:
                return await asyncio.wait_for(future, self.confirm_timeout)
            except TimeoutError:
                return False  # documented: an unanswered confirmation is a denial
            finally:
                session.confirms.pop(request.step_id, None)

        def spent(tokens: int) -> None:  # a budgeted turn reports as it goes: a crash cannot hide a spend
            pipe.send({"op": ops.SPENT, "sid": sid, "turn": turn, "tokens": tokens})

        usage = TurnUsage(budget["tokens"], spent) if budget else TurnUsage()
        measured = session.measured
        extra = {"usage": usage} if measured else {}
        trace = tracing.start_turn(getattr(session.agent, "name", "agent"), sid, turn, traceparent)  # NO_TRACE when off
        try:
            async for event in session.agent.astream(text, confirm=confirm, on_message=on_message, **extra):
                trace.stamp(event)  # the trace id on the terminal event
                if not measured and event.kind in TERMINAL_KINDS:
                    event.metadata["usage"] = None  # an agent of its own: its usage is unknown
                self._emit(sid, turn, translate.agent_event(event, turn))
                if event.kind == TOOL_CALL:
                    # Tool code runs next and may block the loop or kill the process: yield once
                    # so the pending write (queued with call_soon, ahead of us) reaches the front
                    # first and the client sees the call in real time. Yielding rather than
                    # flushing lets every session that got here in this loop turn share one write.
                    await asyncio.sleep(0)
                if pipe.paused:
                    await pipe.writable()
        except asyncio.CancelledError:
            self._emit(sid, turn, translate.interrupted(turn, session.cancel_reason,
                                                        usage=usage.as_dict() if measured else None,
                                                        **trace.ended(session.cancel_reason)))
        except BudgetExceeded:
            refusal, meta = budget_refusal(budget or {})
            self._emit(sid, turn, translate.interrupted(turn, ErrorCode.BUDGET_EXCEEDED, text=refusal,
                                                        usage=usage.as_dict(), **meta,
                                                        **trace.ended(ErrorCode.BUDGET_EXCEEDED.value)))
        except (SystemExit, KeyboardInterrupt) as exc:
            # Agent code asked the interpreter to exit (sys.exit() in a tool). Exit now, as
            # os._exit would: unwinding the event loop instead cancels this sandbox's other
            # turns and reports them as CANCELLED, which nobody asked for. The front sees the
            # pipe close, interrupts every running turn here with SANDBOX_CRASHED and restores.
            log.error("turn %s of session %s: agent code raised %s; the sandbox exits", turn, sid,
                      type(exc).__name__)
            pipe.flush()
            sys.stderr.flush()
            os._exit(ops.EXIT_AGENT_EXIT)
        except Exception as exc:  # the runtime reports agent errors itself; this is a bug net
            log.exception("turn %s of session %s failed", turn, sid)
            self._emit(sid, turn, translate.failed(
                turn, ErrorCode.INTERNAL_ERROR, f"Internal error in the agent runtime ({type(exc).__name__}).",
                usage=usage.as_dict() if measured else None, **trace.ended(ErrorCode.INTERNAL_ERROR.value)))
        finally:
            trace.end()
            session.task = None
            session.turn = None
            # The front keeps at most max_history messages per session; so does the agent here.
            if self.max_history and hasattr(session.agent, "trim_history"):
                session.agent.trim_history(self.max_history)

    async def heartbeat_loop(self) -> None:
        """Prove the event loop is alive; a blocked loop stops these frames."""
        while True:
            self.send({"op": ops.HEARTBEAT})
            await asyncio.sleep(self.heartbeat)


def _takes_usage(agent: Any) -> bool:
    try:
        return "usage" in inspect.signature(agent.astream).parameters
    except (TypeError, ValueError):
        return False


async def serve(sock_fd: int, factory: Any, config: dict) -> int:
    """Run a sandbox on an inherited socket until the front process goes away."""
    import socket

    from myagent.logs import setup_logger
    from myagent.wire.pipe import open_pipe

    import gc

    gc.set_threshold(50_000, 50, 100)  # as in the front process: see server.tune_gc
    # Our loggers in the front's format (agent code's logging stays as it was), then the
    # exporter: set up here, after the fork, since its thread would not survive one.
    setup_logger("myagent", config.get("log_level", "warning"), config.get("log_format", "text"),
                 tracing.LogContext())
    tracing.start()
    host = SessionHost(factory, confirm_timeout=config.get("confirm_timeout"),
                       heartbeat=config.get("heartbeat", 0.5), max_history=config.get("max_history", 0),
                       max_tool_result_chars=config.get("max_tool_result_chars", 0))
    sock = socket.socket(fileno=sock_fd)
    host.pipe = await open_pipe(sock, host.on_frame, host.on_lost, config.get("max_frame", 16 * 1024 * 1024))
    host.send({"op": ops.READY, "pid": os.getpid()})
    beat = asyncio.get_running_loop().create_task(host.heartbeat_loop())
    await host.stopped.wait()
    beat.cancel()
    tasks = [s.task for s in host.sessions.values() if s.task is not None]
    if tasks and not host.pipe.closed:
        await asyncio.wait(tasks, timeout=1.0)
    host.pipe.flush()
    tracing.stop()
    return ops.EXIT_OK
