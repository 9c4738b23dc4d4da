"""user.request_state and user.reconnect_with_state: a session's state as a signed export, and back.

The export format and its signature live in :mod:`myagent.supervisor.state_export`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from myagent.protocol import events as ev
from myagent.protocol.envelope import iso_utc
from myagent.protocol.errors import ErrorCode
from myagent.protocol.schema import state_token
from myagent.supervisor.replies import ClientError
from myagent.supervisor.sessions import decode_history
from myagent.supervisor.state_export import StateError, export_state, import_state

if TYPE_CHECKING:
    from myagent.supervisor.connection import Connection
    from myagent.supervisor.router import Router


class StateRequests:
    def __init__(self, router: "Router", secret: bytes) -> None:
        self.router = router
        self.secret = secret

    async def request_state(self, conn: "Connection", frame: dict) -> None:
        config = self.router.config
        session = self.router.owned(conn, frame.get("session_id"))
        if session.turn is not None:
            raise ClientError(ErrorCode.SESSION_BUSY, "Wait for the running turn to end before exporting.")
        now = time.time()
        doc = {"agent": self.router.registry.agent, "session_id": session.id,
               "history": decode_history(session.history)}
        try:
            token = export_state(self.secret, doc, now=now, ttl=config.state_ttl, max_size=config.max_state_size)
        except StateError as exc:
            raise ClientError(ErrorCode(exc.code), exc.message) from None
        # content.state is ours; metadata.signed_state, state_size and message_count are where the
        # original MyAgent clients read them (they send it back as a top-level signed_state).
        session.emit(ev.AGENT_STATE_EXPORTED, {"state": token}, {
            "expires_at": iso_utc(now + config.state_ttl), "history_messages": len(session.history),
            "size": len(token), "signed_state": token, "state_size": len(token),
            "message_count": len(session.history)})

    async def reconnect_with_state(self, conn: "Connection", frame: dict) -> None:
        try:
            # content.state (canonical) or the original clients' top-level signed_state.
            doc = import_state(self.secret, state_token(frame), now=time.time(),
                               max_size=self.router.config.max_state_size)
        except StateError as exc:
            raise ClientError(ErrorCode(exc.code), exc.message, "content.state") from None
        if doc.get("agent") != self.router.registry.agent:
            raise ClientError(ErrorCode.STATE_INVALID, "The state export belongs to another agent.", "content.state")
        history = doc.get("history")
        if not isinstance(history, list):
            raise ClientError(ErrorCode.STATE_INVALID, "The state export has no history.", "content.state")
        self.router.admit_session(conn)
        session, token = await self.router.new_session(conn, history)
        session.emit(ev.AGENT_STATE_RESTORED, "Session restored from exported state", {
            "resume_token": token, "agent_name": self.router.pool.agent.get("name"),
            "restored_from": doc.get("session_id"), "history_messages": len(history)})
