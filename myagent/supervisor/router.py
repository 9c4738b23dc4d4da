"""Client events in, sandbox ops out; sandbox frames in, session events out.

The router is the front process's brain and owns no I/O of its own: it acts
on validated client frames, on frames from sandboxes and on sandbox loss,
through the session registry, the pool and each connection's outbound queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from myagent import __version__
from myagent.protocol import events as ev
from myagent.protocol.envelope import iso_utc
from myagent.protocol.errors import ErrorCode
from myagent.sandbox import ops
from myagent.supervisor.connection import Connection
from myagent.supervisor.metrics import Metrics
from myagent.supervisor.pool import DRAINING, READY, Sandbox, SandboxPool
from myagent.supervisor.recovery import RecoveryMixin
from myagent.supervisor.replies import ClientError, error_metadata, system_event
from myagent.supervisor.sessions import (Session, SessionRegistry, Turn, decode_history, encode_history,
                                         new_turn_id)
from myagent.supervisor.store.base import StoreError


log = logging.getLogger("myagent.supervisor")

_AGENT_EVENT = {k: "agent." + k for k in ("thinking", "tool_call", "tool_result", "partial_answer",
                                          "final_answer", "error", "interrupted", "user_confirm")}
OPEN_TIMEOUT = 10.0


class Router(RecoveryMixin):
    def __init__(self, config: Any, pool: SandboxPool, registry: SessionRegistry, metrics: Metrics,
                 store: Any = None, state_secret: bytes = b"", node_id: str = "") -> None:
        self.config = config
        self.pool = pool
        self.registry = registry
        self.metrics = metrics
        self.store = store
        self.state_secret = state_secret
        self.node_id = node_id
        self.connections: dict[str, Connection] = {}
        self.draining = False
        self._opens: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._dispatch = {
            ev.USER_CREATE_SESSION: self.create_session,
            ev.USER_MESSAGE: self.message,
            ev.USER_CANCEL: self.cancel,
            ev.USER_RESPONSE: self.response,
            ev.USER_ACK: self.ack,
            ev.USER_RECONNECT: self.reconnect,
            ev.USER_CLOSE_SESSION: self.close_session,
            ev.USER_REQUEST_STATE: self.request_state,
            ev.USER_RECONNECT_WITH_STATE: self.reconnect_with_state,
        }

    # Connections ----------------------------------------------------------------
    def connected(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        c = self.config
        conn.enqueue(system_event(ev.SYSTEM_CONNECTED, "Connected to myagent-ws", {
            "connection_id": conn.id, "protocol_version": ev.PROTOCOL_VERSION, "server_version": __version__,
            "agent_name": self.pool.agent.get("name"),
            "limits": {"max_message_size": c.max_message_size, "max_user_message_chars": c.max_user_message_chars,
                       "max_sessions_per_connection": c.max_sessions_per_connection,
                       "session_ttl": c.session_ttl, "replay_buffer": c.replay_buffer,
                       "heartbeat_interval": c.heartbeat_interval},
        }))

    def disconnected(self, conn: Connection) -> None:
        """Detach the connection's sessions; they live on for --session-ttl."""
        self.connections.pop(conn.id, None)
        now = time.monotonic()
        for sid in conn.sessions:
            session = self.registry.get(sid)
            if session is not None and session.connection is conn:
                session.connection = None
                session.detached_at = now
                self._let_go(session)
        conn.sessions.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, conn: Connection, frame: dict) -> None:
        try:
            await self._dispatch[frame["event"]](conn, frame)
        except ClientError as exc:
            self.reject(conn, exc, frame)

    def reject(self, conn: Connection, exc: ClientError, frame: dict | None = None) -> None:
        self.metrics.error(exc.code.value)
        meta = error_metadata(exc.code)
        if exc.field:
            meta["field"] = exc.field
        if frame is not None and isinstance(frame.get("event"), str):
            meta["request_event"] = frame["event"][:64]
            if isinstance(frame.get("session_id"), str):
                meta["session_id"] = frame["session_id"][:128]
        conn.enqueue(system_event(ev.SYSTEM_ERROR, exc.message, meta))

    def _owned(self, conn: Connection, sid: Any) -> Session:
        """The session if this connection owns it; SESSION_NOT_FOUND otherwise (existence not revealed)."""
        session = self.registry.get(sid)
        if session is None or session.connection is not conn:
            raise ClientError(ErrorCode.SESSION_NOT_FOUND, "No such session on this connection.", "session_id")
        return session

    # Client events --------------------------------------------------------------
    async def create_session(self, conn: Connection, frame: dict) -> None:
        c = self.config
        if self.draining:
            raise ClientError(ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
        if len(conn.sessions) >= c.max_sessions_per_connection:
            raise ClientError(ErrorCode.TOO_MANY_SESSIONS,
                              f"This connection already has {len(conn.sessions)} sessions (limit).")
        if len(self.registry) >= c.max_sessions:
            raise ClientError(ErrorCode.SERVER_BUSY, "The server hosts its maximum number of sessions.")
        if self.pool.unavailable_reason:
            raise ClientError(ErrorCode.AGENT_UNAVAILABLE, "The agent is unavailable: it keeps crashing.")
        session, token = await self._new_session(conn, [])
        agent = self.pool.agent
        session.emit(ev.AGENT_SESSION_CREATED, "Session created", {
            "resume_token": token, "agent_name": agent.get("name"),
            "agent_description": agent.get("description", ""),
            "tools": [{"name": t["name"], "description": t.get("description", ""),
                       "requires_confirmation": t.get("requires_confirmation", False)}
                      for t in agent.get("tools", [])],
            "protocol_version": ev.PROTOCOL_VERSION,
        })

    async def _new_session(self, conn: Connection, history: list) -> tuple[Session, str]:
        """Place a new session (with ``history``) on a sandbox and attach it to ``conn``."""
        if self.store is not None and self.store.durable:
            healthy, why = self.store.health()
            if not healthy:
                raise ClientError(ErrorCode.STORE_UNAVAILABLE, f"Sessions cannot be stored right now: {why}.")
        sandbox = self.pool.place()
        if sandbox is None:
            raise ClientError(ErrorCode.SERVER_BUSY, "Every sandbox is full; try again later.")
        session, token = self.registry.create(conn.principal)
        session.history = encode_history(history)
        try:
            await self._open(session, sandbox, session.history)
        except ClientError:
            self.registry.remove(session.id)
            raise
        if self.store is not None:
            try:
                await self.store.acquire(session.id, self.node_id, self.config.lease_ttl)
            except StoreError as exc:
                log.error("store lease of new session %s failed: %s", session.id, exc,
                          extra={"session_id": session.id})
                self.registry.remove(session.id)
                sandbox.sessions.discard(session.id)
                sandbox.send({"op": ops.CLOSE, "sid": session.id})
                raise ClientError(ErrorCode.STORE_UNAVAILABLE, "The session store is unavailable.") from None
            session.persist()
            for message in session.history:
                self.store.add_message(session.id, message)
        self._attach(session, conn)
        self.metrics.sessions_created += 1
        return session, token

    def _attach(self, session: Session, conn: Connection) -> None:
        if conn.closed:
            session.connection = None
            session.detached_at = time.monotonic()
        else:
            session.connection = conn
            session.detached_at = None
            conn.sessions.add(session.id)

    async def _open(self, session: Session, sandbox: Sandbox, history: list) -> None:
        """Host the session on ``sandbox`` and wait for the sandbox to confirm."""
        future = asyncio.get_running_loop().create_future()
        self._opens[session.id] = future
        session.sandbox = sandbox
        sandbox.sessions.add(session.id)
        sandbox.send({"op": ops.OPEN, "sid": session.id, "history": history})
        try:
            error = await asyncio.wait_for(future, OPEN_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError):
            error = "the sandbox did not answer"
        finally:
            self._opens.pop(session.id, None)
        if error is not None:
            sandbox.sessions.discard(session.id)
            session.sandbox = None
            log.warning("session %s could not be opened: %s", session.id, error,
                        extra={"session_id": session.id, "sandbox_id": sandbox.id})
            raise ClientError(ErrorCode.INTERNAL_ERROR, "The agent could not start a session.")

    async def message(self, conn: Connection, frame: dict) -> None:
        session = self._owned(conn, frame.get("session_id"))
        text = frame["content"]
        if len(text) > self.config.max_user_message_chars:
            raise ClientError(ErrorCode.MESSAGE_TOO_LARGE,
                              f"Message has {len(text)} characters; the limit is "
                              f"{self.config.max_user_message_chars}.", "content")
        if self.draining:
            raise ClientError(ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
        if session.turn is not None:
            raise ClientError(ErrorCode.SESSION_BUSY, "A turn is already running in this session.")
        sandbox = session.sandbox
        if sandbox is None or session.restoring:
            if self.pool.unavailable_reason:
                raise ClientError(ErrorCode.AGENT_UNAVAILABLE, "The agent is unavailable: it keeps crashing.")
            if not session.restoring:  # an earlier restore gave up; sandboxes are back: try again
                self._start_restore(session, "SANDBOX_CRASHED")
            raise ClientError(ErrorCode.SESSION_BUSY, "The session is being restored; retry shortly.")
        message_id = (frame.get("metadata") or {}).get("message_id")
        if isinstance(message_id, str) and message_id:
            if message_id in session.recent_message_ids:
                session.emit(ev.SYSTEM_NOTICE, "Duplicate message ignored.",
                             {"duplicate": True, "message_id": message_id})
                return
            session.recent_message_ids.append(message_id)
        turn = Turn(new_turn_id(), time.monotonic(), message_id if isinstance(message_id, str) else None)
        session.turn = turn
        session.turns += 1
        if self.config.turn_timeout > 0:
            turn.timer = asyncio.get_running_loop().call_later(
                self.config.turn_timeout, self.cancel_turn, session, turn.id, "TURN_TIMEOUT")
        session.persist()
        sandbox.turns += 1
        if sandbox.turn_limit and sandbox.turns >= sandbox.turn_limit:
            self.pool.retire(sandbox)  # takes no new sessions; this one moves after its turn
        self.metrics.turns_started += 1
        # The user's message is history from now on, whatever happens to the sandbox.
        session.add_history(orjson.dumps({"role": "user", "content": text}).decode())
        sandbox.send({"op": ops.TURN, "sid": session.id, "turn": turn.id, "text": text})

    def cancel_turn(self, session: Session, turn_id: str, reason: str) -> None:
        if session.turn is not None and session.turn.id == turn_id and session.sandbox is not None:
            session.sandbox.send({"op": ops.CANCEL, "sid": session.id, "turn": turn_id, "reason": reason})

    async def cancel(self, conn: Connection, frame: dict) -> None:
        session = self._owned(conn, frame.get("session_id"))
        if session.turn is None:
            raise ClientError(ErrorCode.NO_ACTIVE_TURN, "No turn is running in this session.")
        self.cancel_turn(session, session.turn.id, "CANCELLED")

    async def response(self, conn: Connection, frame: dict) -> None:
        session = self._owned(conn, frame.get("session_id"))
        step = frame.get("step_id")
        if session.turn is None or step not in session.turn.pending_steps:
            raise ClientError(ErrorCode.STEP_NOT_FOUND, "No confirmation is waiting for this step_id.", "step_id")
        content = frame["content"]
        ok = content.get("confirmed", content.get("approved"))
        session.turn.pending_steps.discard(step)
        if session.sandbox is not None:
            session.sandbox.send({"op": ops.CONFIRM, "sid": session.id, "step": step, "ok": bool(ok)})

    async def ack(self, conn: Connection, frame: dict) -> None:
        content = frame.get("content") or {}
        sid = frame.get("session_id")
        last_seq = content.get("last_seq")
        event_id = content.get("last_event_id")
        if isinstance(event_id, str) and ":" in event_id:
            # The original console acks with an event id and no session_id: it names the session.
            event_sid, _, seq_text = event_id.rpartition(":")
            sid = sid or event_sid
            if last_seq is None and seq_text.isdigit():
                last_seq = int(seq_text)
        if not isinstance(last_seq, int):
            raise ClientError(ErrorCode.SCHEMA_VIOLATION, "user.ack needs content.last_seq or last_event_id.",
                              "content.last_seq")
        self._owned(conn, sid).ack(last_seq)

    async def reconnect(self, conn: Connection, frame: dict) -> None:
        content = frame["content"]
        session = self.registry.get(frame.get("session_id"))
        if session is not None and not session.leased:
            # Our copy may be stale: another node may have run it since we let go. Start over
            # from the store, which also takes the lease back.
            self.forget(session)
            session = None
        if session is None:
            session = await self._revive(conn, frame.get("session_id"), str(content.get("resume_token", "")))
        if session is None or session.owner != conn.principal or not session.check_token(
                str(content.get("resume_token", ""))):
            raise ClientError(ErrorCode.SESSION_NOT_FOUND, "No such session, or the resume token is wrong.",
                              "session_id")
        # Refuse before taking anything over: a refused reconnect leaves the owner untouched.
        if len(conn.sessions) >= self.config.max_sessions_per_connection and session.id not in conn.sessions:
            raise ClientError(ErrorCode.TOO_MANY_SESSIONS, "This connection has its maximum number of sessions.")
        if session.connection is not None and session.connection is not conn:
            old = session.connection
            old.sessions.discard(session.id)
            old.enqueue(system_event(ev.SYSTEM_NOTICE, "Session taken over by another connection.",
                                     {"session_id": session.id, "taken_over": True}))
        last_seq = int(content.get("last_seq", 0))
        replay, gap = session.events_after(last_seq)
        # Replay first, then the resumed event: wire order stays seq order.
        for data in replay:
            conn.enqueue(data)
        session.connection = conn
        session.detached_at = None
        conn.sessions.add(session.id)
        meta = {"replayed": len(replay), "last_seq": session.seq,
                "turn_running": session.turn is not None}
        if gap is not None:
            meta["replay_gap_from"] = gap
            meta["error_code"] = ErrorCode.REPLAY_UNAVAILABLE.value
        session.emit(ev.AGENT_SESSION_RESUMED, "Session resumed", meta)

    async def request_state(self, conn: Connection, frame: dict) -> None:
        from myagent.supervisor.state_export import StateError, export_state

        session = self._owned(conn, frame.get("session_id"))
        if session.turn is not None:
            raise ClientError(ErrorCode.SESSION_BUSY, "Wait for the running turn to end before exporting.")
        now = time.time()
        try:
            token = export_state(self.state_secret, {"agent": self.registry.agent, "session_id": session.id,
                                                     "history": decode_history(session.history)},
                                 now=now, ttl=self.config.state_ttl, max_size=self.config.max_state_size)
        except StateError as exc:
            raise ClientError(ErrorCode(exc.code), exc.message) from None
        session.emit(ev.AGENT_STATE_EXPORTED, {"state": token}, {
            "expires_at": iso_utc(now + self.config.state_ttl), "history_messages": len(session.history),
            "size": len(token)})

    async def reconnect_with_state(self, conn: Connection, frame: dict) -> None:
        from myagent.protocol.schema import state_token
        from myagent.supervisor.state_export import StateError, import_state

        try:
            # content.state (canonical) or the original clients' top-level signed_state.
            doc = import_state(self.state_secret, state_token(frame), now=time.time(),
                               max_size=self.config.max_state_size)
        except StateError as exc:
            raise ClientError(ErrorCode(exc.code), exc.message, "content.state") from None
        if doc.get("agent") != self.registry.agent:
            raise ClientError(ErrorCode.STATE_INVALID, "The state export belongs to another agent.", "content.state")
        history = doc.get("history")
        if not isinstance(history, list):
            raise ClientError(ErrorCode.STATE_INVALID, "The state export has no history.", "content.state")
        if len(conn.sessions) >= self.config.max_sessions_per_connection:
            raise ClientError(ErrorCode.TOO_MANY_SESSIONS, "This connection has its maximum number of sessions.")
        session, token = await self._new_session(conn, history)
        session.emit(ev.AGENT_STATE_RESTORED, "Session restored from exported state", {
            "resume_token": token, "agent_name": self.pool.agent.get("name"),
            "restored_from": doc.get("session_id"), "history_messages": len(history)})

    async def close_session(self, conn: Connection, frame: dict) -> None:
        session = self._owned(conn, frame.get("session_id"))
        self.end_session(session, "closed by the client")

    def end_session(self, session: Session, reason: str) -> None:
        if session.turn is not None:
            session.emit(ev.AGENT_INTERRUPTED, "The session was closed.",
                         {"reason": "SESSION_CLOSED", "turn_id": session.turn.id,
                          **error_metadata(ErrorCode.SESSION_CLOSED)})
        session.emit(ev.AGENT_SESSION_END, "Session ended", {"reason": reason})
        self.registry.remove(session.id)
        if session.connection is not None:
            session.connection.sessions.discard(session.id)
        if session.sandbox is not None:
            session.sandbox.sessions.discard(session.id)
            session.sandbox.send({"op": ops.CLOSE, "sid": session.id})
        self.metrics.sessions_closed += 1

    # Sandbox frames ---------------------------------------------------------------
    def on_sandbox_frame(self, sandbox: Sandbox, frame: dict) -> None:
        op = frame.get("op")
        if op == ops.EVENT:
            self._agent_event(frame)
        elif op == ops.MESSAGE:
            session = self.registry.get(frame.get("sid"))
            if session is not None and session.sandbox is sandbox:
                session.add_history(frame["m"])
        elif op in (ops.OPENED, ops.OPEN_FAILED):
            future = self._opens.get(frame.get("sid"))
            if future is not None and not future.done():
                future.set_result(frame.get("error") if op == ops.OPEN_FAILED else None)
            elif op == ops.OPEN_FAILED:
                log.error("session %s could not be moved to sandbox %s: %s", frame.get("sid"), sandbox.id,
                          frame.get("error"), extra={"session_id": frame.get("sid"), "sandbox_id": sandbox.id})

    def _agent_event(self, frame: dict) -> None:
        session = self.registry.get(frame.get("sid"))
        turn = session.turn if session is not None else None
        if turn is None or turn.id != frame.get("turn"):
            return  # a late event of a turn that already ended (cancelled, restored elsewhere)
        kind = frame.get("k")
        event = _AGENT_EVENT.get(kind)
        if event is None:
            log.error("sandbox sent an unknown event kind %.40r", kind)
            return
        meta = frame.get("m") or {}
        meta["turn_id"] = turn.id
        step = frame.get("st")
        content = frame.get("c")
        if kind == "tool_result" and isinstance(content, str) and len(content) > self.config.max_tool_result_chars:
            limit = self.config.max_tool_result_chars
            content = f"{content[:limit]}…[truncated {len(content) - limit} chars]"
            meta["truncated"] = True
        if kind == "interrupted" and "error_code" not in meta:
            # Every interruption names its cause as an error code (CANCELLED, TURN_TIMEOUT, ...).
            reason = meta.get("reason") or "CANCELLED"
            if reason in ErrorCode.__members__:
                meta.update(error_metadata(reason))
        if kind == "user_confirm" and step:
            turn.pending_steps.add(step)
        if turn.first_event is None:
            turn.first_event = time.monotonic()
            self.metrics.first_event(turn.first_event - turn.started)
        session.emit(event, content, meta, step)
        if event in ev.TERMINAL_EVENTS:
            self.metrics.turn_done(event, meta.get("error_code") or meta.get("reason"),
                                   time.monotonic() - turn.started)
            sandbox = session.sandbox
            if sandbox is not None and sandbox.state == DRAINING:
                self._move(session)
                self.pool.stop_retired(sandbox)
            if session.connection is None:
                self._let_go(session)

    def broadcast_notice(self, text: str, metadata: dict) -> None:
        data = system_event(ev.SYSTEM_NOTICE, text, metadata)
        for conn in self.connections.values():
            conn.enqueue(data)

    # Periodic work ---------------------------------------------------------------------
    def sweep(self) -> None:
        """Drop detached sessions older than --session-ttl."""
        ttl = self.config.session_ttl
        now = time.monotonic()
        for session in self.registry.detached():
            if session.detached_at is not None and now - session.detached_at > ttl:
                if session.leased:
                    self.end_session(session, "expired")
                else:
                    self.forget(session)  # not ours any more to end: the store sweeps it

    def heartbeat(self) -> None:
        data = system_event(ev.SYSTEM_HEARTBEAT, None, {"server_time": iso_utc(time.time())})
        for conn in self.connections.values():
            conn.enqueue(data)

    @property
    def ready(self) -> bool:
        return any(s.state == READY for s in self.pool.sandboxes.values())
