"""myagent/client/reasons.py: one non-empty line per connect failure, and which ones are worth retrying."""

from __future__ import annotations

import socket
import ssl

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.http11 import Response

from myagent.client.reasons import describe, retryable


def status(code: int, body: bytes = b"") -> InvalidStatus:
    return InvalidStatus(Response(code, "x", Headers(), body))


@pytest.mark.parametrize("exc, url, says, retry", [
    (ConnectionResetError(), "wss://h:1", "TLS handshake failed: is the server serving plain ws://?", True),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER]"), "wss://h:1", "TLS handshake failed", False),
    (InvalidMessage("did not receive a valid HTTP response"), "ws://h:1", "is it serving wss:// (TLS)", True),
    (ConnectionRefusedError(111, "Connect call failed"), "ws://h:1", "connection refused", True),
    (socket.gaierror(-2, "Name or service not known"), "ws://nope.invalid:1", "unknown host 'nope.invalid'", True),
    (TimeoutError(), "ws://h:1", "no answer in time", True),
    (status(401), "ws://h:1", "requires a token (HTTP 401): pass --token or set MYAGENT_WS_TOKEN", False),
    (status(403, b'{"error": "host not allowed"}'), "ws://h:1", "HTTP 403: host not allowed", False),
    (status(503, b'{"error": "shutting down"}'), "ws://h:1", "busy or shutting down (HTTP 503: shutting down)", True),
])
def test_each_failure_has_its_line(exc, url, says, retry):
    text = describe(exc, url)
    assert says in text and "\n" not in text
    assert retryable(exc) is retry


def test_a_refused_token_is_not_called_missing():
    assert "refused the token" in describe(status(401), "ws://h:1", has_token=True)


def test_never_empty():
    assert describe(ConnectionResetError(), "ws://h:1")
    assert describe(Exception(), "ws://h:1") == "Exception"
