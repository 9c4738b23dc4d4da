"""One client connection's inbound side: frames in, parsed, validated, rate-limited, routed.

Every frame, valid or not, spends a rate-limit token; a refusal is one
``system.error`` naming the request; a connection that keeps flooding is
closed with 1008 once the refusals it earned were sent. An exception in a
handler is logged and answered with INTERNAL_ERROR: it never ends the
connection or touches another one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from myagent.logs import AGENT
from myagent.protocol.errors import ErrorCode
from myagent.protocol.exceptions import ProtocolError
from myagent.protocol.schema import validate_client_frame
from myagent.protocol.wirejson import parse_client_frame
from myagent.supervisor.connection import Connection
from myagent.supervisor.guard import client_address
from myagent.supervisor.ratelimit import TokenBucket
from myagent.supervisor.replies import ClientError

if TYPE_CHECKING:
    from myagent.supervisor.agents import AgentUnit
    from myagent.supervisor.server import Server

log = logging.getLogger("myagent.supervisor.inbound")

CLOSE_POLICY_VIOLATION = 1008
# How long a closing connection's queued frames (the refusals it earned) may take to go out.
CLOSE_FLUSH_TIMEOUT = 1.0


async def close_after_queued(conn: Connection, ws: ServerConnection, code: int, reason: str) -> None:
    """Close with ``code`` once the frames already queued to the client were handed to the socket,
    waiting at most CLOSE_FLUSH_TIMEOUT for one that does not read. Closing here, in the handler,
    before it returns, matters: websockets closes a returning handler's connection with 1000."""
    await conn.drain(CLOSE_FLUSH_TIMEOUT)
    closing = asyncio.ensure_future(ws.close(code, reason))
    try:
        # Discard what the client sent before it saw our close frame: unread messages would
        # keep reading paused, the client's close frame unread, and the close would take
        # the whole close timeout (measured: 5 s). A client that never stops is cut by it.
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    await closing


async def serve_connection(server: "Server", unit: "AgentUnit", ws: ServerConnection) -> None:
    """One client connection to one agent from the upgrade to the close: every frame parsed,
    validated, rate-limited and handed to that agent's router; refusals answered, never fatal."""
    AGENT.set(unit.log_name)  # this connection's task: its log records name the agent
    remote = client_address(ws.remote_address, ws.request.headers if ws.request else None,
                            server.trusted_proxies)
    conn = Connection(ws, principal=getattr(ws, "principal", "anonymous"),
                      max_outbound=server.config.max_outbound_buffer, remote=remote)
    server.guard.opened(remote)
    unit.metrics.connections_opened += 1
    unit.router.connected(conn)
    conn.start()
    log.info("connection %s opened from %s", conn.id, remote, extra={"connection_id": conn.id})
    router = unit.router
    metrics = unit.metrics
    bucket = TokenBucket(server.config.rate_limit, server.config.rate_burst)
    strikes_limit = server.config.rate_strikes
    try:
        async for message in ws:
            metrics.frames_in += 1
            conn.last_inbound = time.monotonic()
            frame: Any = None
            refusal = None
            if isinstance(message, bytes):
                refusal = ClientError(ErrorCode.UNSUPPORTED_FRAME,
                                      "Binary frames are not supported; send JSON text frames.")
            else:
                try:
                    frame = parse_client_frame(message)
                    validate_client_frame(frame)
                except ProtocolError as exc:
                    refusal = ClientError(ErrorCode(exc.code), exc.message, exc.field)
            # Every frame, valid or not, spends a token: a flood of garbage is limited too. The
            # check comes after parsing (a few µs, bounded by --max-message-size) so a refusal
            # names the request's event and session, like every other error.
            if not bucket.take():
                if bucket.strikes >= strikes_limit:
                    log.warning("connection %s keeps exceeding the rate limit: closing", conn.id,
                                extra={"connection_id": conn.id})
                    await close_after_queued(conn, ws, CLOSE_POLICY_VIOLATION, "rate limit exceeded")
                    break
                refusal = ClientError(ErrorCode.RATE_LIMITED,
                                      f"Too many messages; the limit is {server.config.rate_limit:g}/s.")
            if refusal is not None:
                router.reject(conn, refusal, frame if isinstance(frame, dict) else None)
                continue
            try:
                await router.handle(conn, frame)
            except Exception:
                log.exception("connection %s: failed to handle %s", conn.id, frame.get("event"),
                              extra={"connection_id": conn.id, "session_id": frame.get("session_id")})
                router.reject(conn, ClientError(ErrorCode.INTERNAL_ERROR, "Internal server error."), frame)
    except ConnectionClosed:
        pass
    finally:
        server.guard.closed(remote)
        metrics.connections_closed += 1
        router.disconnected(conn)
        conn.stop_writer()
        metrics.events_sent_closed += conn.sent  # /metrics events_sent: live connections count their own
        log.info("connection %s closed (%s)", conn.id, ws.close_code, extra={"connection_id": conn.id})
