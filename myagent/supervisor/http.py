"""HTTP endpoints on the WebSocket port: /health, /ready, /status (and the upgrade gate).

websockets calls ``process_request`` for every incoming HTTP request before
the handshake; returning a Response answers plain HTTP, returning None lets
the WebSocket upgrade proceed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from myagent.supervisor import status as status_mod

if TYPE_CHECKING:
    from myagent.supervisor.server import Server


def http_response(status: int, body: bytes | str, content_type: str = "application/json") -> Response:
    if isinstance(body, str):
        body = body.encode()
    reasons = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 503: "Service Unavailable"}
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store")])
    return Response(status, reasons.get(status, "OK"), headers, body)


def json_response(status: int, obj: Any) -> Response:
    return http_response(status, orjson.dumps(obj, option=orjson.OPT_INDENT_2))


class HttpEndpoints:
    def __init__(self, server: "Server") -> None:
        self.server = server

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade:
            address = connection.remote_address[0] if connection.remote_address else ""
            principal, refusal = self.server.guard.admit(request.path, request.headers, address)
            if refusal is not None:
                self.server.metrics.connections_refused[str(refusal.status)] += 1
                return json_response(refusal.status, {"error": refusal.reason})
            connection.principal = principal  # read by the connection handler
            if self.server.router.draining:
                self.server.metrics.connections_refused["draining"] += 1
                return json_response(503, {"error": "shutting down"})
            if len(self.server.router.connections) >= self.server.config.max_connections:
                self.server.metrics.connections_refused["max_connections"] += 1
                return json_response(503, {"error": "too many connections"})
            return None
        if path == "/health":
            return json_response(200, {"status": "ok"})
        if path == "/ready":
            ready, reason = self.server.readiness()
            return json_response(200 if ready else 503, {"ready": ready, "reason": reason})
        if path == "/status":
            return json_response(200, status_mod.build(self.server))
        if path == "/":
            return http_response(200, "myagent-ws: connect with a WebSocket client to this URL.\n", "text/plain")
        return json_response(404, {"error": "not found", "path": path[:200]})

