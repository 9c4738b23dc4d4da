"""One line saying why a connection could not be opened, and whether trying again can help.

Pure: maps the exceptions of ``websockets.asyncio.client.connect`` (and the
OS and TLS errors under it) to text for a person. Several of them carry no
message at all (a TLS client talking to a plain server gets a bare
``ConnectionResetError()``), hence the explanations.
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
from urllib.parse import urlsplit

from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI

TOKEN_HINT = "pass --token or set MYAGENT_WS_TOKEN"


def _body_error(exc: InvalidStatus) -> str:
    """The server's own reason, from its JSON body ({"error": ...}), if short and present."""
    try:
        error = json.loads(exc.response.body or b"").get("error")
    except (ValueError, AttributeError):
        return ""
    return f": {error}" if isinstance(error, str) and 0 < len(error) <= 200 else ""


def _status_reason(exc: InvalidStatus, has_token: bool) -> str:
    code = exc.response.status_code
    if code == 401:
        if has_token:
            return "the server refused the token (HTTP 401); check --token / MYAGENT_WS_TOKEN"
        return f"the server requires a token (HTTP 401): {TOKEN_HINT}"
    if code == 503:
        return f"the server is busy or shutting down (HTTP 503{_body_error(exc)})"
    return f"the server refused the connection (HTTP {code}{_body_error(exc)})"


def describe(exc: BaseException, url: str, has_token: bool = False) -> str:
    """Why connecting to ``url`` failed, in one line (never empty)."""
    tls = urlsplit(url).scheme == "wss"
    host = urlsplit(url).hostname or url
    if isinstance(exc, InvalidStatus):
        return _status_reason(exc, has_token)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if tls and isinstance(exc, (ssl.SSLError, ConnectionResetError, EOFError, InvalidMessage)):
        return "TLS handshake failed: is the server serving plain ws://?"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, InvalidMessage):
        return "the server did not answer the WebSocket handshake: is it serving wss:// (TLS), or not myagent-ws?"
    if isinstance(exc, socket.gaierror):
        return f"unknown host {host!r} ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return "connection refused: is the server running, on this port?"
    if isinstance(exc, TimeoutError):
        return "no answer in time (a firewall, or a busy server?)"
    if isinstance(exc, InvalidURI):
        return f"not a WebSocket URL: {exc.msg}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    text = str(exc)
    if isinstance(exc, InvalidHandshake):
        return f"the WebSocket handshake failed: {text or type(exc).__name__}"
    return text or type(exc).__name__


def retryable(exc: BaseException) -> bool:
    """Whether the same connect can succeed later (the server restarting, busy, draining)."""
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code >= 500
    if isinstance(exc, (ssl.SSLError, InvalidURI)):
        return False
    return isinstance(exc, (OSError, TimeoutError, EOFError, InvalidMessage))
