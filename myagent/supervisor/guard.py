"""Admission control for WebSocket upgrades: auth, origin, connection caps.

Runs in ``process_request``, before the handshake completes, so a refused
client costs one HTTP response and nothing else (no Connection, no session,
no sandbox work). Pure decisions over the request's headers; the counters of
open connections per address live here too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("myagent.supervisor.guard")

LOOPBACK = ("127.", "::1", "localhost")


def client_address(peer: Any, headers: Any, trusted_proxies: frozenset[str]) -> str:
    """The client's address: the TCP peer, or, when the peer is a trusted proxy, the last
    address that proxy appended to X-Forwarded-For (earlier entries are client-supplied)."""
    address = peer[0] if peer else ""
    if address in trusted_proxies:
        forwarded = headers.get("X-Forwarded-For", "") if headers is not None else ""
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1][:64]
    return address


def needs_auth_warning(host: str, auth_enabled: bool) -> bool:
    """Binding beyond loopback without auth is allowed (a trusted network, a proxy doing auth)
    but deserves a loud warning at start."""
    return not auth_enabled and not host.startswith(LOOPBACK)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def load_tokens(tokens: Iterable[str], tokens_file: str = "") -> list[str]:
    """Tokens from --auth-token (repeatable, or comma separated in the env) and --auth-tokens-file."""
    result = [t.strip() for t in tokens if t and t.strip()]
    if tokens_file:
        with open(tokens_file, encoding="utf-8") as handle:
            result += [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    return result


def redact(path: str) -> str:
    """The request path without its query string (it may hold a token)."""
    return path.split("?", 1)[0] + ("?…" if "?" in path else "")


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


class Guard:
    def __init__(self, tokens: list[str], allow_origins: Iterable[str], max_per_address: int) -> None:
        # Principals are named by a digest prefix, so the token itself is never kept or logged.
        self._tokens = [(_digest(t), "token:" + hashlib.sha256(t.encode()).hexdigest()[:12]) for t in tokens]
        self.allow_origins = {o.rstrip("/") for o in allow_origins}
        self.max_per_address = max_per_address
        self.per_address: Counter[str] = Counter()

    @property
    def auth_enabled(self) -> bool:
        return bool(self._tokens)

    def presented_token(self, path: str, headers: Any) -> str | None:
        auth = headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        query = urlsplit(path).query
        if query:
            values = parse_qs(query).get("token")
            if values:
                return values[0]
        return None

    def principal(self, token: str | None) -> str | None:
        """The principal for ``token``, or None if it is not valid. Constant time per known token."""
        if not self._tokens:
            return "anonymous"
        if not token:
            return None
        digest = _digest(token)
        found = None
        for known, name in self._tokens:  # compare against all, so timing does not reveal which matched
            if hmac.compare_digest(known, digest):
                found = name
        return found

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """No Origin (not a browser) is allowed; a browser's Origin must be this host (the
        built-in console, served by this server) or be on the --allow-origin list."""
        if origin is None or "*" in self.allow_origins:
            return True
        origin = origin.rstrip("/")
        if origin in self.allow_origins:
            return True
        return bool(host) and urlsplit(origin).netloc.lower() == host.lower()

    def admit(self, path: str, headers: Any, address: str) -> tuple[str | None, Refusal | None]:
        """Decide on an upgrade: (principal, None) to accept or (None, Refusal)."""
        principal = self.principal(self.presented_token(path, headers))
        if principal is None:
            return None, Refusal(401, "missing or invalid token")
        if not self.origin_allowed(headers.get("Origin"), headers.get("Host")):
            return None, Refusal(403, "origin not allowed")
        if self.max_per_address and self.per_address[address] >= self.max_per_address:
            return None, Refusal(503, "too many connections from this address")
        return principal, None

    def opened(self, address: str) -> None:
        self.per_address[address] += 1

    def closed(self, address: str) -> None:
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]
