"""Signed, expiring exports of a session's state (user.request_state / user.reconnect_with_state).

Format: ``<payload>.<signature>``, both base64url without padding. The payload
is zlib-compressed JSON ``{"v": 1, "iat", "exp", "agent", "history", ...}``;
the signature is HMAC-SHA256 over the payload text with the server's state
secret. Anything altered, truncated, signed with another key, expired or too
large is refused with a clear reason; nothing in it is trusted before the
signature checks out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import zlib
from typing import Any

import orjson

from myagent.supervisor.exceptions import ConfigError

VERSION = 1


class StateError(Exception):
    """``code`` is STATE_INVALID or STATE_EXPIRED."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    # validate=True: stray characters are an error, not silently skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def export_state(secret: bytes, payload: dict[str, Any], *, now: float, ttl: float, max_size: int) -> str:
    doc = {"v": VERSION, "iat": now, "exp": now + ttl, **payload}
    body = _b64(zlib.compress(orjson.dumps(doc), 6))
    token = f"{body}.{_b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"
    if len(token) > max_size:
        raise StateError("STATE_INVALID", f"the session's state is {len(token)} bytes; the limit is {max_size}")
    return token


def import_state(secret: bytes, token: str, *, now: float, max_size: int) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > max_size:
        raise StateError("STATE_INVALID", "the state export is missing or too large")
    body, dot, signature = token.partition(".")
    if not dot:
        raise StateError("STATE_INVALID", "the state export is malformed")
    expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    try:
        valid = hmac.compare_digest(expected, _unb64(signature))
    except (ValueError, base64.binascii.Error):
        valid = False
    if not valid:
        raise StateError("STATE_INVALID", "the state export's signature does not match (altered or foreign)")
    try:
        doc = orjson.loads(zlib.decompress(_unb64(body), bufsize=max_size))
    except (ValueError, zlib.error, orjson.JSONDecodeError):
        raise StateError("STATE_INVALID", "the state export cannot be decoded") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise StateError("STATE_INVALID", "unsupported state export version")
    if not isinstance(doc.get("exp"), (int, float)) or doc["exp"] < now:
        raise StateError("STATE_EXPIRED", "the state export has expired")
    return doc


def load_secret(configured: str, state_dir: str) -> bytes:
    """The --state-secret, or one generated once and kept (0600) in the state directory."""
    if configured:
        return configured.encode()
    path = os.path.join(state_dir, "state-secret")
    try:
        with open(path, "rb") as handle:
            secret = handle.read().strip()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    return secret


def state_secret(config: Any) -> str:
    """MYAGENT_WS_STATE_SECRET or the first line of --state-secret-file ("" = the state dir's own)."""
    if not config.state_secret_file:
        return config.state_secret
    if config.state_secret:
        raise ConfigError("set MYAGENT_WS_STATE_SECRET or --state-secret-file, not both")
    from myagent.supervisor.guard import read_secret_file

    return read_secret_file(config.state_secret_file, "--state-secret-file")[0]
