"""Keeping sessions alive across sandbox loss, recycling, reloads and nodes.

Composed of Placement (who hosts what) and Turns (what runs): when a sandbox
is lost its running turns end with one ``agent.interrupted`` and its sessions
are placed again with their history (:meth:`Recovery.restore`); idle sessions
move off draining sandboxes (recycling, reload); on a shared store a detached,
idle session lets go of its lease, and a session this node does not hold is
revived from the store.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any

from myagent.protocol import events as ev
from myagent.protocol.errors import ErrorCode, error_metadata
from myagent.supervisor.placement import Placement, PlacementError
from myagent.supervisor.pool import SandboxPool
from myagent.supervisor.quarantine import Quarantine
from myagent.supervisor.sandboxes import DRAINING, Sandbox
from myagent.supervisor.background import Background
from myagent.supervisor.replies import ClientError
from myagent.supervisor.sessions import Session, SessionRegistry, hash_token
from myagent.supervisor.store.base import StoreError
from myagent.supervisor.turns import Turns

if TYPE_CHECKING:
    from myagent.supervisor.connection import Connection
    from myagent.supervisor.metrics import Metrics

log = logging.getLogger("myagent.supervisor.recovery")

RETRY_DELAY = 0.05  # seconds between placement attempts of a restore while no sandbox has room
# Losses a running turn can cause; the others (retired, shutting down) are the server's doing.
CRASHES = frozenset({ErrorCode.SANDBOX_CRASHED, ErrorCode.MEMORY_LIMIT, ErrorCode.CPU_LIMIT,
                     ErrorCode.WORKER_TIMEOUT, ErrorCode.PROCESS_LIMIT, ErrorCode.SANDBOX_MISBEHAVED})


class Recovery:
    def __init__(self, config: Any, registry: SessionRegistry, placement: Placement, turns: Turns,
                 pool: SandboxPool, metrics: "Metrics", store: Any = None, node_id: str = "") -> None:
        self.config = config
        self.registry = registry
        self.placement = placement
        self.turns = turns
        self.pool = pool
        self.metrics = metrics
        self.store = store
        self.node_id = node_id
        self.quarantine = Quarantine(config.quarantine_after, config.quarantine_window)
        self.background = Background()


    @property
    def stopping(self) -> bool:
        """Draining (no new placements) or stopping the pool: nothing is placed again."""
        return self.placement.stopping or self.pool.stopping

    # Sandbox loss and restore ------------------------------------------------------------
    def on_sandbox_lost(self, sandbox: Sandbox, reason: str) -> bool:
        """Interrupt the sandbox's running turns and place its sessions again.

        A crash while a turn's tool was running (between its agent.tool_call and agent.tool_result:
        agent code of that session was executing) is blamed on that session, and then not charged
        to the restart budget; True when it was. Without --quarantine-after nothing is blamed."""
        code = ErrorCode(reason) if reason in ErrorCode.__members__ else ErrorCode.SANDBOX_CRASHED
        blaming = code in CRASHES and self.quarantine.max_crashes > 0
        blamed = False
        for session in self.placement.lost(sandbox):
            turn = session.turn
            if turn is not None:
                self.turns.abort(session, code)
                if blaming and turn.tools_running:
                    blamed = True
                    self._blame(session)
            self.restore(session, reason)
        return blamed

    def _blame(self, session: Session) -> None:
        if session.quarantined or not self.quarantine.blame(session.crashes):
            return
        session.quarantined = True
        self.metrics.sessions_quarantined += 1
        log.warning("session %s quarantined: its turns crashed their sandbox %d times in %.0fs", session.id,
                    len(session.crashes), self.quarantine.window, extra={"session_id": session.id})
        text = (f"This session's turns crashed the agent's sandbox {len(session.crashes)} times; it runs no "
                "more turns. Its history is kept: export it or start a new session.")
        session.emit(ev.SYSTEM_ERROR, text, error_metadata(ErrorCode.SESSION_QUARANTINED))
        self.turns.drop_queue(session, ErrorCode.SESSION_QUARANTINED, "The session is quarantined.")

    def restore(self, session: Session, reason: str = ErrorCode.SANDBOX_CRASHED.value) -> None:
        """Place an unhosted session again (bounded by --restore-timeout); a no-op if under way."""
        if session.restoring or session.placing or session.sandbox is not None or session.closed:
            return
        if self.stopping:  # shutting down: it is revived from the store after the restart
            return
        session.restoring = True
        self.background.spawn(self._restore(session, reason))

    async def _restore(self, session: Session, reason: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.restore_timeout
        try:
            while session.sandbox is None:
                if session.closed or self.stopping:
                    return
                if self.placement.can_place():
                    try:
                        await self.placement.host(session)  # grows the pool where --max-sandboxes allows
                    except PlacementError:
                        pass  # that sandbox failed to open it (or died): try again below
                    else:
                        self.metrics.sessions_restored += 1
                        session.emit(ev.SYSTEM_NOTICE, "The session was restored on a new sandbox with its history.",
                                     {"restored": True, "reason": reason, "history_messages": len(session.history)})
                        break
                    if session.closed or self.stopping:
                        return
                if self.pool.unavailable_reason or loop.time() > deadline:
                    session.emit(ev.SYSTEM_ERROR, "The session could not be restored: the agent is unavailable.",
                                 error_metadata(ErrorCode.AGENT_UNAVAILABLE))
                    self.turns.drop_queue(session, ErrorCode.AGENT_UNAVAILABLE, "The agent is unavailable.")
                    return
                await asyncio.sleep(RETRY_DELAY)
        finally:
            session.restoring = False
        self.turns.next(session)

    # Recycling: moving idle sessions off draining sandboxes ------------------------------
    def idle(self, session: Session) -> None:
        """A session has nothing to run: move it off a draining sandbox, let go of its lease."""
        sandbox = session.sandbox
        if sandbox is not None and sandbox.state == DRAINING:
            self.background.spawn(self._move_off(session))
        elif session.connection is None:
            self.let_go(session)

    def migrate_idle(self) -> None:
        """Move every idle session off draining sandboxes; stop the ones left empty."""
        for sandbox in list(self.pool.sandboxes.values()):
            if sandbox.state != DRAINING:
                continue
            for session in list(sandbox.hosted.values()):
                if session.turn is None and not session.placing:
                    self.background.spawn(self._move_off(session))
            self.pool.stop_if_drained(sandbox)

    async def _move_off(self, session: Session) -> None:
        old = session.sandbox
        if old is None or old.state != DRAINING or session.turn is not None:
            return  # things changed since it was scheduled (a message started a turn, ...)
        moved = await self.placement.move(session)
        if old is not None:
            self.pool.stop_if_drained(old)
        if session.closed:
            return
        if session.sandbox is None:
            self.restore(session)  # the old sandbox died during the move
        elif moved or session.inbox:
            self.turns.next(session)  # messages that arrived during the move
        # else: no sandbox could take it now; migrate_idle() tries again when one is ready

    # Leases (shared stores: a session runs on one node at a time) ---------------------------
    def let_go(self, session: Session) -> None:
        """A detached, idle session's lease is released, so a reconnect through any node can
        take it over at once; this node keeps a copy it re-validates before using again."""
        if self.store is None or not self.store.shared or not session.leased:
            return
        if session.connection is not None or session.turn is not None or session.inbox or session.placing \
                or session.restoring:
            return
        session.leased = False
        self.background.spawn(self.store.release(session.id, self.node_id))

    def forget(self, session: Session) -> None:
        """Drop this node's copy of a session another node now owns (the store keeps it)."""
        if self.registry.sessions.get(session.id) is not session:
            return
        self.registry.remove(session.id, keep_stored=True)
        session.closed = True
        if session.connection is not None:
            session.connection.sessions.discard(session.id)
            session.connection = None
        self.placement.unhost(session)
        session.inbox.clear()
        # The node that owns it now reports its turn (SERVER_RESTARTED): nothing of ours may reach the
        # shared store any more, and no client is attached here to tell.
        session.store = None
        if session.turn is not None:
            self.turns.finish(session, ev.AGENT_INTERRUPTED, ErrorCode.SESSION_CLOSED.value)

    async def revive(self, conn: "Connection", sid: Any, token: str) -> Session | None:
        """A session this process does not hold: load it from the store and host it here."""
        if self.store is None or not self.store.durable or not isinstance(sid, str):
            return None
        try:
            stored = await self.store.load(sid)
        except Exception as exc:
            log.error("store load of %s failed: %s", sid, exc, extra={"session_id": sid})
            raise ClientError(ErrorCode.STORE_UNAVAILABLE, "The session store is unavailable.") from None
        if stored is None or stored.record.agent != self.registry.agent or stored.record.owner != conn.principal:
            return None
        if self.registry.get(sid) is not None:  # revived concurrently by another request
            return self.registry.get(sid)
        if not hmac.compare_digest(bytes.fromhex(stored.record.token_hash), hash_token(token)):
            return None
        try:
            acquired = await self.store.acquire(sid, self.node_id, self.config.lease_ttl)
        except StoreError as exc:
            log.error("store lease of %s failed: %s", sid, exc, extra={"session_id": sid})
            raise ClientError(ErrorCode.STORE_UNAVAILABLE, "The session store is unavailable.") from None
        if not acquired:
            raise ClientError(ErrorCode.SESSION_BUSY,
                              "The session is active on another node; retry after it lets go.", "session_id")
        if self.registry.get(sid) is not None:  # revived by a concurrent request while we waited
            return self.registry.get(sid)
        session = self.registry.revive(stored, conn.remote)
        try:
            await self.placement.host(session)
        except PlacementError as exc:
            self.registry.remove(sid, keep_stored=True)
            try:
                await self.store.release(sid, self.node_id)
            except StoreError:
                pass  # the lease lapses after --lease-ttl
            raise ClientError(exc.code, exc.message) from None
        session.detached_at = time.monotonic()
        if stored.record.turn_id:
            # The process that ran this turn died with it (server restart or node loss).
            name, body = self.turns.translate.interrupted(stored.record.turn_id, ErrorCode.SERVER_RESTARTED)
            session.deliver(name.encode(), body)
            self.metrics.turn_done(ev.AGENT_INTERRUPTED, ErrorCode.SERVER_RESTARTED.value, 0.0)
        session.persist()
        self.metrics.sessions_restored += 1
        if session.inbox:  # messages a concurrent reconnect queued while it was being placed
            self.turns.next(session)
        log.info("session %s revived from the %s store", sid, self.store.name,
                 extra={"session_id": sid, "connection_id": conn.id})
        return session
