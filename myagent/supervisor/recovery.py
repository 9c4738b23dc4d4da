"""Keeping sessions alive across sandbox loss, recycling, reloads and nodes.

Mixed into the Router (it uses the router's registry, pool, store and its
``_open``/``_new_session`` helpers): re-opening a dead sandbox's sessions
elsewhere with their history, moving idle sessions off draining sandboxes,
letting go of leases on a shared store, and reviving a session from the store.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any

from myagent.protocol import events as ev
from myagent.protocol.errors import ErrorCode
from myagent.sandbox import ops
from myagent.supervisor.pool import DRAINING, Sandbox
from myagent.supervisor.replies import ClientError, error_metadata
from myagent.supervisor.sessions import Session, hash_token
from myagent.supervisor.store.base import StoreError

if TYPE_CHECKING:
    from myagent.supervisor.connection import Connection

log = logging.getLogger("myagent.supervisor")

RESTORE_TIMEOUT = 30.0


class RecoveryMixin:
    """Session recovery for the Router (see the module docstring)."""

    # Sandbox loss and session restore ------------------------------------------------
    def on_sandbox_lost(self, sandbox: Sandbox, reason: str) -> None:
        """Interrupt the sandbox's running turns and re-open its sessions elsewhere."""
        for sid in list(sandbox.sessions):
            session = self.registry.get(sid)
            if session is None or session.sandbox is not sandbox:
                continue
            future = self._opens.get(sid)
            if future is not None and not future.done():
                future.set_result(f"sandbox lost ({reason})")
                continue
            session.sandbox = None
            if session.turn is not None:
                session.emit(ev.AGENT_INTERRUPTED, f"The agent's sandbox was stopped ({reason}).",
                             {"reason": reason, "turn_id": session.turn.id, **error_metadata(reason)})
                self.metrics.turn_done(ev.AGENT_INTERRUPTED, reason, 0.0)
            self._start_restore(session, reason)
        sandbox.sessions.clear()

    def _start_restore(self, session: Session, reason: str) -> None:
        session.restoring = True
        self._spawn(self._restore(session, reason))

    async def _restore(self, session: Session, reason: str) -> None:
        """Re-open ``session`` with its history on a healthy sandbox, waiting (bounded by
        RESTORE_TIMEOUT) for one to be ready; give up with AGENT_UNAVAILABLE."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESTORE_TIMEOUT
        while self.registry.get(session.id) is session:
            sandbox = self.pool.place()
            if sandbox is not None:
                try:
                    await self._open(session, sandbox, session.history)
                except ClientError:
                    pass  # that sandbox failed to open it (or died): try again below
                else:
                    session.restoring = False
                    self.metrics.sessions_restored += 1
                    session.emit(ev.SYSTEM_NOTICE, "The session was restored on a new sandbox with its history.",
                                 {"restored": True, "reason": reason, "history_messages": len(session.history)})
                    return
            if self.pool.unavailable_reason or loop.time() > deadline:
                session.restoring = False
                session.emit(ev.SYSTEM_ERROR, "The session could not be restored: the agent is unavailable.",
                             error_metadata(ErrorCode.AGENT_UNAVAILABLE))
                return
            await asyncio.sleep(0.02 if sandbox is None else 0.05)

    # Recycling: moving idle sessions off draining sandboxes ---------------------------
    def _move(self, session: Session) -> bool:
        """Re-host an idle session on another sandbox. The pipe keeps order, so a turn sent
        right after this reaches the new sandbox after its ``open``: no waiting needed."""
        target = self.pool.place()
        old = session.sandbox
        if target is None or old is None:
            return False
        old.sessions.discard(session.id)
        old.send({"op": ops.CLOSE, "sid": session.id})
        target.sessions.add(session.id)
        session.sandbox = target
        target.send({"op": ops.OPEN, "sid": session.id, "history": session.history})
        return True

    def migrate_idle(self) -> None:
        """Move every idle session off draining sandboxes; stop the ones left empty."""
        for sandbox in list(self.pool.sandboxes.values()):
            if sandbox.state != DRAINING:
                continue
            for sid in list(sandbox.sessions):
                session = self.registry.get(sid)
                if session is not None and session.turn is None and not session.restoring:
                    if not self._move(session):
                        break
            self.pool.stop_retired(sandbox)


    # Leases (shared stores: a session runs on one node at a time) -----------------------
    def _let_go(self, session: Session) -> None:
        """A detached, idle session's lease is released, so a reconnect through any node can
        take it over at once; this node keeps a copy it re-validates before using again."""
        if self.store is None or not self.store.shared or not session.leased:
            return
        if session.connection is not None or session.turn is not None:
            return
        session.leased = False
        self._spawn(self.store.release(session.id, self.node_id))

    def forget(self, session: Session) -> None:
        """Drop this node's copy of a session another node now owns (the store keeps it)."""
        if self.registry.sessions.get(session.id) is not session:
            return
        self.registry.sessions.pop(session.id, None)
        if session.connection is not None:
            session.connection.sessions.discard(session.id)
            session.connection = None
        if session.sandbox is not None:
            session.sandbox.sessions.discard(session.id)
            session.sandbox.send({"op": ops.CLOSE, "sid": session.id})
            session.sandbox = None
        session.end_turn() if session.turn is not None else None

    async def _revive(self, conn: Connection, sid: Any, token: str) -> Session | None:
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
        sandbox = self.pool.place()
        if sandbox is None:
            try:
                await self.store.release(sid, self.node_id)
            except StoreError:
                pass  # the lease lapses after --lease-ttl
            raise ClientError(ErrorCode.SERVER_BUSY, "Every sandbox is full; try again later.")
        session = self.registry.revive(stored)
        try:
            await self._open(session, sandbox, session.history)
        except ClientError:
            self.registry.sessions.pop(sid, None)
            try:
                await self.store.release(sid, self.node_id)
            except StoreError:
                pass  # the lease lapses after --lease-ttl
            raise
        session.detached_at = time.monotonic()
        if stored.record.turn_id:
            # The process that ran this turn died with it (server restart or node loss).
            session.emit(ev.AGENT_INTERRUPTED, "The server restarted during this turn.",
                         {"reason": ErrorCode.SERVER_RESTARTED.value, "turn_id": stored.record.turn_id,
                          **error_metadata(ErrorCode.SERVER_RESTARTED)})
            self.metrics.turn_done(ev.AGENT_INTERRUPTED, ErrorCode.SERVER_RESTARTED.value, 0.0)
        session.persist()
        self.metrics.sessions_restored += 1
        log.info("session %s revived from the %s store", sid, self.store.name,
                 extra={"session_id": sid, "connection_id": conn.id})
        return session

