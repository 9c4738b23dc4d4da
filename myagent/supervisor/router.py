"""Client events in: what each ``user.*`` event does.

The router owns no I/O of its own and no session state machine: it checks a
validated client frame against the connection (which sessions it owns, its
limits) and hands the work to Turns (messages, cancel, confirmations),
Placement (where a new session lives) and Recovery (reconnects to sessions
this node does not hold). Refusals are ClientErrors, answered with one
``system.error`` naming the request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from myagent import __version__
from myagent.protocol import events as ev
from myagent.protocol.envelope import iso_utc, parse_event_id
from myagent.protocol.errors import ErrorCode, error_metadata
from myagent.supervisor.connection import Connection
from myagent.supervisor.metrics import Metrics
from myagent.supervisor.placement import Placement, PlacementError
from myagent.supervisor.pool import SandboxPool
from myagent.supervisor.recovery import Recovery
from myagent.supervisor.replies import ClientError, system_event
from myagent.supervisor.sessions import Session, SessionRegistry
from myagent.supervisor.state_requests import StateRequests
from myagent.supervisor.store.base import StoreError
from myagent.supervisor.turns import Turns
from myagent.wire import ops

log = logging.getLogger("myagent.supervisor.router")


class Router:
    def __init__(self, config: Any, pool: SandboxPool, registry: SessionRegistry, metrics: Metrics,
                 placement: Placement, turns: Turns, recovery: Recovery, store: Any = None,
                 state_secret: bytes = b"", node_id: str = "") -> None:
        self.config = config
        self.pool = pool
        self.registry = registry
        self.metrics = metrics
        self.placement = placement
        self.turns = turns
        self.recovery = recovery
        self.store = store
        self.node_id = node_id
        self.agent_route = ""  # the agent's name on this server: its URL path /<name>
        self.connections: dict[str, Connection] = {}
        self.draining = False
        self.exports = StateRequests(self, state_secret)
        self._dispatch = {
            ev.USER_CREATE_SESSION: self.create_session,
            ev.USER_MESSAGE: self.message,
            ev.USER_CANCEL: self.cancel,
            ev.USER_RESPONSE: self.response,
            ev.USER_ACK: self.ack,
            ev.USER_RECONNECT: self.reconnect,
            ev.USER_CLOSE_SESSION: self.close_session,
            ev.USER_REQUEST_STATE: self.exports.request_state,
            ev.USER_RECONNECT_WITH_STATE: self.exports.reconnect_with_state,
        }

    # Connections ----------------------------------------------------------------
    def connected(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        c = self.config
        conn.enqueue(system_event(ev.SYSTEM_CONNECTED, "Connected to myagent-ws", {
            "connection_id": conn.id, "protocol_version": ev.PROTOCOL_VERSION, "server_version": __version__,
            "agent_name": self.pool.agent.get("name"), "agent": self.agent_route,
            "limits": {"max_message_size": c.max_message_size, "max_user_message_chars": c.max_user_message_chars,
                       "max_sessions_per_connection": c.max_sessions_per_connection,
                       "max_queued_messages": c.max_queued_messages, "multitask": c.multitask,
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
                self.recovery.let_go(session)
        conn.sessions.clear()

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

    def owned(self, conn: Connection, sid: Any) -> Session:
        """The session if this connection owns it; SESSION_NOT_FOUND otherwise (existence not revealed)."""
        session = self.registry.get(sid)
        if session is None or session.connection is not conn:
            raise ClientError(ErrorCode.SESSION_NOT_FOUND, "No such session on this connection.", "session_id")
        return session

    def admit_session(self, conn: Connection) -> None:
        c = self.config
        if self.draining:
            raise ClientError(ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
        if len(conn.sessions) >= c.max_sessions_per_connection:
            raise ClientError(ErrorCode.TOO_MANY_SESSIONS,
                              f"This connection already has {len(conn.sessions)} sessions (limit).")
        if self.pool.unavailable_reason:
            raise ClientError(ErrorCode.AGENT_UNAVAILABLE, "The agent is unavailable: it keeps crashing.")
        # Per address and per principal, detached sessions count: a client that opens sessions and
        # disconnects must not hold every sandbox slot for --session-ttl. Last: a refused request
        # must not have evicted anything.
        self._within_cap(c.max_sessions_per_address, self.registry.by_address[conn.remote],
                         {"address": conn.remote}, "from this address")
        if conn.principal != "anonymous":
            self._within_cap(c.max_sessions_per_principal, self.registry.by_owner[conn.principal],
                             {"owner": conn.principal}, "for this token")
        if len(self.registry) >= c.max_sessions:
            raise ClientError(ErrorCode.SERVER_BUSY, "The server hosts its maximum number of sessions.")

    def _within_cap(self, cap: int, held: int, whose: dict, what: str) -> None:
        """At the cap, end the oldest detached session of the same client; none: TOO_MANY_SESSIONS."""
        if not cap or held < cap:
            return
        victim = self.registry.oldest_detached(**whose)
        if victim is None:
            raise ClientError(ErrorCode.TOO_MANY_SESSIONS, f"{held} sessions are open {what} (limit); close one.")
        log.info("session %s evicted: the oldest detached session at the %s cap", victim.id, what,
                 extra={"session_id": victim.id})
        self.metrics.sessions_evicted += 1
        self.end_session(victim, "evicted: its client opened too many sessions")

    # Client events --------------------------------------------------------------
    async def create_session(self, conn: Connection, frame: dict) -> None:
        self.admit_session(conn)
        session, token = await self.new_session(conn, [])
        agent = self.pool.agent
        session.emit(ev.AGENT_SESSION_CREATED, "Session created", {
            "resume_token": token, "agent_name": agent.get("name"),
            "agent_description": agent.get("description", ""),
            "tools": [{"name": t["name"], "description": t.get("description", ""),
                       "requires_confirmation": t.get("requires_confirmation", False)}
                      for t in agent.get("tools", [])],
            "protocol_version": ev.PROTOCOL_VERSION,
            "usage": session.usage.as_dict(),
        })

    async def new_session(self, conn: Connection, history: list) -> tuple[Session, str]:
        """Place a new session (with ``history``) on a sandbox and attach it to ``conn``."""
        store = self.store
        if store is not None and store.durable:
            healthy, why = store.health()
            if not healthy:
                raise ClientError(ErrorCode.STORE_UNAVAILABLE, f"Sessions cannot be stored right now: {why}.")
        session, token = self.registry.create(conn.principal, history, conn.remote)
        try:
            await self.placement.host(session)
            if store is not None:
                await store.acquire(session.id, self.node_id, self.config.lease_ttl)
        except PlacementError as exc:
            self.registry.remove(session.id)
            raise ClientError(exc.code, exc.message) from None
        except StoreError as exc:
            log.error("store lease of new session %s failed: %s", session.id, exc, extra={"session_id": session.id})
            self.placement.unhost(session)
            self.registry.remove(session.id)
            raise ClientError(ErrorCode.STORE_UNAVAILABLE, "The session store is unavailable.") from None
        if store is not None:
            session.persist()
            if session.history:
                store.replace_history(session.id, list(session.history))
        if conn.closed:
            session.detached_at = time.monotonic()
        else:
            session.connection = conn
            conn.sessions.add(session.id)
        self.metrics.sessions_created += 1
        return session, token

    async def message(self, conn: Connection, frame: dict) -> None:
        session = self.owned(conn, frame.get("session_id"))
        text = frame["content"]
        if len(text) > self.config.max_user_message_chars:
            raise ClientError(ErrorCode.MESSAGE_TOO_LARGE,
                              f"Message has {len(text)} characters; the limit is "
                              f"{self.config.max_user_message_chars}.", "content")
        if self.draining:
            raise ClientError(ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
        if session.sandbox is None and not session.placing and self.pool.unavailable_reason:
            raise ClientError(ErrorCode.AGENT_UNAVAILABLE, "The agent is unavailable: it keeps crashing.")
        meta = frame.get("metadata") or {}
        message_id = meta.get("message_id") if isinstance(meta.get("message_id"), str) else None
        if message_id:
            if message_id in session.recent_message_ids:
                session.emit(ev.SYSTEM_NOTICE, "Duplicate message ignored.",
                             {"duplicate": True, "message_id": message_id})
                return
            session.recent_message_ids.append(message_id)
        self.turns.submit(session, text, message_id, meta.get("multitask") or self.config.multitask)

    async def cancel(self, conn: Connection, frame: dict) -> None:
        session = self.owned(conn, frame.get("session_id"))
        if not self.turns.cancel(session, ErrorCode.CANCELLED):
            raise ClientError(ErrorCode.NO_ACTIVE_TURN, "No turn is running in this session.")

    async def response(self, conn: Connection, frame: dict) -> None:
        session = self.owned(conn, frame.get("session_id"))
        step = frame.get("step_id")
        turn = session.turn
        if turn is None or step not in turn.pending_steps:
            raise ClientError(ErrorCode.STEP_NOT_FOUND, "No confirmation is waiting for this step_id.", "step_id")
        content = frame["content"]
        turn.pending_steps.discard(step)
        if session.sandbox is not None:
            session.sandbox.send({"op": ops.CONFIRM, "sid": session.id, "step": step,
                                  "ok": bool(content.get("confirmed", content.get("approved")))})

    async def ack(self, conn: Connection, frame: dict) -> None:
        content = frame.get("content") or {}
        sid = frame.get("session_id")
        last_seq = content.get("last_seq")
        parsed = parse_event_id(content["last_event_id"]) if isinstance(content.get("last_event_id"), str) else None
        if parsed is not None:
            # The original console acks with an event id and no session_id: it names the session.
            sid = sid or parsed[0]
            if last_seq is None:
                last_seq = parsed[1]
        if not isinstance(last_seq, int):
            raise ClientError(ErrorCode.SCHEMA_VIOLATION, "user.ack needs content.last_seq or last_event_id.",
                              "content.last_seq")
        self.owned(conn, sid).ack(last_seq)

    async def reconnect(self, conn: Connection, frame: dict) -> None:
        content = frame["content"]
        token = str(content.get("resume_token", ""))
        session = self.registry.get(frame.get("session_id"))
        if session is not None and not session.leased:
            # Our copy may be stale: another node may have run it since we let go. Start over
            # from the store, which also takes the lease back.
            self.recovery.forget(session)
            session = None
        if session is None:
            session = await self.recovery.revive(conn, frame.get("session_id"), token)
        if session is None or session.owner != conn.principal or not session.check_token(token):
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
        replay, gap = session.events_after(int(content.get("last_seq", 0)))
        # Replay first, then the resumed event: wire order stays seq order.
        for data in replay:
            conn.enqueue(data)
        session.connection = conn
        session.detached_at = None
        conn.sessions.add(session.id)
        meta: dict[str, Any] = {"replayed": len(replay), "last_seq": session.seq,
                                "turn_running": session.turn is not None, "queued": len(session.inbox),
                                "usage": session.usage.as_dict()}
        if gap is not None:
            meta["replay_gap_from"] = gap
            meta["error_code"] = ErrorCode.REPLAY_UNAVAILABLE.value
        session.emit(ev.AGENT_SESSION_RESUMED, "Session resumed", meta)

    async def close_session(self, conn: Connection, frame: dict) -> None:
        self.end_session(self.owned(conn, frame.get("session_id")), "closed by the client")

    def end_session(self, session: Session, reason: str) -> None:
        session.closed = True
        self.placement.unhost(session)  # first: nothing may start on it any more
        self.turns.abort(session, ErrorCode.SESSION_CLOSED)
        self.turns.drop_queue(session, ErrorCode.SESSION_CLOSED, "The session was closed.")
        session.emit(ev.AGENT_SESSION_END, "Session ended", {"reason": reason})
        self.registry.remove(session.id)
        if session.connection is not None:
            session.connection.sessions.discard(session.id)
        # Whatever still runs for it (a restore giving up, a late task) reaches no client and no store.
        session.connection = None
        session.store = None
        self.metrics.sessions_closed += 1

    # Periodic work and broadcasts ---------------------------------------------------------
    def sweep(self) -> None:
        """Drop detached sessions older than --session-ttl."""
        ttl = self.config.session_ttl
        now = time.monotonic()
        for session in self.registry.detached():
            if session.detached_at is not None and now - session.detached_at > ttl:
                if session.leased:
                    self.end_session(session, "expired")
                else:
                    self.recovery.forget(session)  # not ours any more to end: the store sweeps it

    def broadcast(self, data: bytes) -> None:
        for conn in self.connections.values():
            conn.enqueue(data)

    def broadcast_notice(self, text: str, metadata: dict) -> None:
        self.broadcast(system_event(ev.SYSTEM_NOTICE, text, metadata))

    def heartbeat(self) -> None:
        self.broadcast(system_event(ev.SYSTEM_HEARTBEAT, None, {"server_time": iso_utc(time.time())}))
