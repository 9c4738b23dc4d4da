"""HTTP endpoints on the WebSocket port (and on the optional ``--status-port``).

``/health`` liveness · ``/ready`` readiness · ``/status`` the JSON document of
docs/status.md · ``/metrics`` Prometheus text · ``/agents`` the agents served (for
the console's picker) · ``/`` the browser console (a plain GET; the WebSocket
endpoints are ``/<agent>``, and ``/`` while one agent is served) · ``/dashboard`` the live
ops view · ``/static/NAME`` their scripts and styles, shipped in the package
(``/static/vendor/NAME`` the libraries they use).

websockets calls ``process_request`` for every incoming HTTP request before
the handshake; returning a Response answers plain HTTP, returning None lets
the WebSocket upgrade proceed.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from myagent.supervisor import prom
from myagent.supervisor import status as status_mod
from myagent.supervisor.guard import client_address, single_header, unauthorized

if TYPE_CHECKING:
    from myagent.supervisor.server import Server

log = logging.getLogger("myagent.supervisor.http")

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 421: "Misdirected Request", 426: "Upgrade Required",
           503: "Service Unavailable"}
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# The pages load only their own files and talk only to this origin (ws: for the console,
# fetch for the dashboard). no-referrer: a ?token= in the page URL never leaks in a Referer.
PAGE_HEADERS = [("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                 "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
                ("Referrer-Policy", "no-referrer"), ("X-Content-Type-Options", "nosniff")]
PAGES = {"/": "console.html", "/dashboard": "dashboard.html"}
BEARER_CHALLENGE = [("WWW-Authenticate", 'Bearer realm="myagent-ws"')]  # RFC 6750: how to authenticate
PROTECTED = frozenset({"/status", "/metrics", "/agents"})
# The Host is not echoed: the body says what to do, not what was sent.
HOST_REFUSED = {"error": "host not allowed: this server does not serve that name (see --allow-host)"}


def http_response(status: int, body: bytes | str, content_type: str = "application/json",
                  extra: list[tuple[str, str]] | None = None, cache: str = "no-store") -> Response:
    if isinstance(body, str):
        body = body.encode()
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", cache), *(extra or ())])
    return Response(status, REASONS.get(status, "OK"), headers, body)


def json_response(status: int, obj: Any, extra: list[tuple[str, str]] | None = None) -> Response:
    return http_response(status, orjson.dumps(obj, option=orjson.OPT_INDENT_2), extra=extra)


def load_static() -> dict[str, bytes]:
    """Every file of myagent/static, read once (they are small) and served from memory."""
    files: dict[str, bytes] = {}
    try:
        root = resources.files("myagent") / "static"
        for folder, prefix in ((root, ""), (root / "vendor", "vendor/")):  # vendor/: third-party libraries
            for entry in folder.iterdir():
                if entry.is_file() and any(entry.name.endswith(ext) for ext in STATIC_TYPES):
                    files[prefix + entry.name] = entry.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # pragma: no cover - a broken install
        log.warning("myagent/static is missing: the console and the dashboard are not served")
    return files


class HttpEndpoints:
    def __init__(self, server: "Server") -> None:
        self.server = server
        self.registry = prom.make_registry(server)  # this server's own: never the global default registry
        self.static = load_static()
        self._status_server: Any = None
        self.status_port: int | None = None

    def refuse_foreign_host(self, connection: ServerConnection, request: Request, upgrade: bool) -> Response | None:
        """DNS-rebinding defence, before anything else: 403 to an upgrade, 421 to plain HTTP."""
        if self.server.guard.host_allowed(request.headers):
            return None
        address = client_address(connection.remote_address, request.headers, self.server.trusted_proxies)
        self.server.guard.hosts.note_refused(", ".join(request.headers.get_all("Host")), address)
        if upgrade:
            unit = self.server.agents.route(request.path.split("?", 1)[0])
            (unit.metrics.connections_refused if unit is not None else self.server.refused_unrouted)["host"] += 1
        return json_response(403 if upgrade else 421, HOST_REFUSED)

    def _checked(self, connection: ServerConnection, request: Request) -> tuple[str, bool, Response | None]:
        """The path without its query, whether this is an upgrade, and the answer to a foreign Host."""
        upgrade = (single_header(request.headers, "Upgrade")[0] or "").lower() == "websocket"
        return request.path.split("?", 1)[0], upgrade, self.refuse_foreign_host(connection, request, upgrade)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, upgrade, refused = self._checked(connection, request)
        if refused is not None:
            return refused
        if upgrade:
            unit = self.server.agents.route(path)
            refused = unit.metrics.connections_refused if unit is not None else self.server.refused_unrouted
            address = client_address(connection.remote_address, request.headers, self.server.trusted_proxies)
            principal, refusal = self.server.guard.admit(request.path, request.headers, address)
            if refusal is not None:
                refused[str(refusal.status)] += 1
                return json_response(refusal.status, {"error": refusal.reason},
                                     BEARER_CHALLENGE if refusal.status == 401 else None)
            if unit is None:  # after the token check: only clients that may connect learn the names
                refused["404"] += 1
                return json_response(404, {"error": "no agent at this path", "path": path[:200],
                                           "agents": ["/" + name for name in self.server.agents.names()]})
            connection.principal = principal  # read by the connection handler
            connection.agent_unit = unit
            if self.server.draining or unit.router.draining:
                refused["draining"] += 1
                return json_response(503, {"error": "shutting down"})
            if self.server.connection_count >= self.server.config.max_connections:
                refused["max_connections"] += 1
                return json_response(503, {"error": "too many connections"})
            return None
        if path in PROTECTED and self.server.guard.auth_enabled:
            # With auth on, what describes the server (sessions, pids, limits) needs a token too;
            # /health and /ready stay open for probes. The --status-port is the unauthenticated
            # ops listener: bind it to a private address.
            token = self.server.guard.presented_token(request.path, request.headers)
            if self.server.guard.principal(token) is None:
                return json_response(401, {"error": unauthorized(token)}, BEARER_CHALLENGE)
        return self.route(path, pages=True)

    def process_status_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The ``--status-port`` listener: ops endpoints and the dashboard, never a WebSocket."""
        path, upgrade, refused = self._checked(connection, request)
        if refused is not None:
            return refused
        if upgrade:
            return json_response(404, {"error": "no WebSocket here; connect to the main port"})
        return self.route(path, pages=False)

    def route(self, path: str, pages: bool) -> Response:
        if path == "/health":
            return json_response(200, {"status": "ok"})
        if path == "/ready":
            ready, reason = self.server.readiness()
            return json_response(200 if ready else 503, {"ready": ready, "reason": reason})
        if path == "/status":
            return json_response(200, status_mod.build(self.server))
        if path == "/metrics":
            return http_response(200, prom.render(self.registry), prom.CONTENT_TYPE)
        if path == "/agents":
            return json_response(200, status_mod.agent_list(self.server))
        page = PAGES.get(path)
        if page is not None and (pages or page == "dashboard.html"):
            return self.static_file(page)
        if path.startswith("/static/"):
            return self.static_file(path[len("/static/"):])
        return json_response(404, {"error": "not found", "path": path[:200]})

    def static_file(self, name: str) -> Response:
        body = self.static.get(name)  # a dict lookup: no path ever reaches the file system
        if body is None:
            return json_response(404, {"error": "not found", "path": ("/static/" + name)[:200]})
        ext = name[name.rfind("."):]
        extra = PAGE_HEADERS if ext == ".html" else [("X-Content-Type-Options", "nosniff")]
        return http_response(200, body, STATIC_TYPES[ext], extra, cache="no-cache")

    # --status-port --------------------------------------------------------------------
    async def bind_status_port(self, host: str, port: int) -> int:
        """Bind the listener (OSError when the port is taken); it serves after start_status_port()."""
        async def no_websocket(ws: ServerConnection) -> None:  # never called: every request is answered
            await ws.close(1008)

        self._status_server = await serve(no_websocket, host, port, process_request=self.process_status_request,
                                          server_header=None, compression=None, open_timeout=10,
                                          start_serving=False)
        self.status_port = self._status_server.sockets[0].getsockname()[1]
        return self.status_port

    async def start_status_port(self) -> None:
        await self._status_server.start_serving()

    async def close(self) -> None:
        if self._status_server is not None:
            self._status_server.close()
            await self._status_server.wait_closed()
            self._status_server = None
