"""Admission control for WebSocket upgrades and HTTP requests: Host, auth, origin, connection caps.

Runs in ``process_request``, before the handshake completes, so a refused
client costs one HTTP response and nothing else (no Connection, no session,
no sandbox work). Pure decisions over the request's headers; the counters of
open connections per address live here too.

Order of the checks on an upgrade: Host (403), token (401), Origin (403),
per-address cap (503). The Host check comes first so that a page that reached
us through DNS rebinding learns nothing, not even whether tokens are on.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

from myagent.supervisor.exceptions import ConfigError

log = logging.getLogger("myagent.supervisor.guard")

LOOPBACK = ("127.", "::1", "localhost")
WILDCARDS = ("", "0.0.0.0", "::", "[::]")
# Names that always mean this machine: browsers resolve localhost and *.localhost to loopback
# themselves (RFC 6761), so no DNS answer of an attacker can put them on another address.
LOCAL_NAMES = ("localhost",)
LOCAL_SUFFIXES = (".localhost",)
MAX_LOGGED_HOSTS = 256
MAX_REMEMBERED_HOSTS = 1024


def client_address(peer: Any, headers: Any, trusted_proxies: frozenset[str]) -> str:
    """The client's address: the TCP peer, or, when the peer is a trusted proxy, the last
    address that proxy appended to X-Forwarded-For (earlier entries are client-supplied)."""
    address = peer[0] if peer else ""
    if address in trusted_proxies:
        get_all = getattr(headers, "get_all", None)
        forwarded = (",".join(get_all("X-Forwarded-For")) if get_all is not None  # repeated: one list
                     else headers.get("X-Forwarded-For", "") if headers is not None else "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1][:64]
    return address


def needs_auth_warning(host: str, auth_enabled: bool) -> bool:
    """Binding beyond loopback without auth is allowed (a trusted network, a proxy doing auth)
    but deserves a loud warning at start."""
    return not auth_enabled and not host.startswith(LOOPBACK)


def single_header(headers: Any, name: str) -> tuple[str | None, bool]:
    """(value, ok) of a header that must appear at most once: (None, True) when absent,
    (None, False) when repeated (two Host or Origin headers are an attack or a broken client)."""
    if headers is None:
        return None, True
    get_all = getattr(headers, "get_all", None)
    if get_all is None:  # a plain dict (unit tests)
        return headers.get(name), True
    values = get_all(name)
    if len(values) > 1:
        return None, False
    return (values[0] if values else None), True


def host_name(value: str) -> str | None:
    """The name or address of a ``Host`` header, lower case, without port, brackets or a
    trailing dot; None when it is not a valid ``host[:port]``."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return None
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
        return name
    if value.count(":") > 1:  # a bare IPv6 address is not a valid Host
        return None
    name, _, port = value.partition(":")
    if _ and not port.isdigit():
        return None
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253 or not all(c.isascii() and (c.isalnum() or c in "-._") for c in name):
        return None
    return name


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheck:
    """The DNS-rebinding defence: the ``Host`` of every request must name this server.

    After a DNS rebinding, a page of ``http://evil.example:8080`` talks to our port with
    ``Host: evil.example:8080`` and a matching ``Origin``: the same-origin check alone admits
    it. A rebinding needs a name the attacker's DNS answers for, so these are always accepted:

    * an IP address (``127.0.0.1:8080``, ``[::1]``, the pod IP of a Kubernetes probe): the
      browser then connected to exactly that address, no DNS involved;
    * ``localhost`` and ``*.localhost`` (browsers resolve them to loopback themselves);
    * this machine's host name (``socket.gethostname()``) and the name given to ``--host``;

    plus every ``--allow-host`` entry: a name (``agent.example.com``), ``.example.com`` (the
    domain and every subdomain; ``*.example.com`` means the same), or ``*`` (no check, for a
    proxy that already checks Host). A request without Host (not a browser) is not affected.
    The port is not compared: behind a proxy, Host carries the proxy's port.
    """

    def __init__(self, allow_hosts: Iterable[str] = (), bind_host: str = "",
                 hostname: str | None = None) -> None:
        entries = [h.strip().lower().rstrip(".") for h in allow_hosts if h and h.strip()]
        self.any = "*" in entries
        machine = (socket.gethostname() if hostname is None else hostname).lower().rstrip(".")
        bound = bind_host.strip().strip("[]").lower().rstrip(".")
        names = {*LOCAL_NAMES, machine}
        if bound and bound not in WILDCARDS and not is_address(bound):
            names.add(bound)
        suffixes = set(LOCAL_SUFFIXES)
        for entry in entries:
            if entry.startswith("*."):
                entry = entry[1:]
            if entry.startswith("."):
                suffixes.add(entry)
                names.add(entry[1:])
            elif entry != "*":
                names.add(entry)
        names.discard("")
        self.names = frozenset(names)
        self.suffixes = tuple(sorted(suffixes))
        self.configured = tuple(e for e in entries if e != "*")
        self._logged: set[str] = set()
        self._decided: dict[str, bool] = {}  # a server sees a handful of distinct Host values

    def allowed(self, value: str | None) -> bool:
        if self.any or value is None:
            return True
        known = self._decided.get(value)
        if known is None:
            known = self._decide(value)
            if len(self._decided) < MAX_REMEMBERED_HOSTS:  # bounded: Host values are client input
                self._decided[value] = known
        return known

    def _decide(self, value: str) -> bool:
        name = host_name(value)
        if name is None:
            return False
        return is_address(name) or name in self.names or name.endswith(self.suffixes)

    def describe(self) -> str:
        """One line for the start-up banner: what Host names are served."""
        if self.any:
            return "any Host (--allow-host '*'): DNS-rebinding protection is off"
        names = sorted(self.names - set(LOCAL_NAMES))
        suffixes = [f"*{s}" for s in self.suffixes if s not in LOCAL_SUFFIXES]
        shown = ", ".join(["IP addresses", "localhost", "*.localhost", *names, *suffixes])
        return f"Host names served: {shown}; other names are refused (--allow-host NAME adds one)"

    def note_refused(self, value: str | None, address: str) -> None:
        """Log a refused Host once per name (an attacker controls the value: bounded and quoted)."""
        shown = (value or "")[:100]
        if shown in self._logged or len(self._logged) >= MAX_LOGGED_HOSTS:
            return
        self._logged.add(shown)
        log.warning("refused requests for Host %r from %s: not an allowed host name (--allow-host)", shown, address)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_secret_file(path: str, option: str) -> list[str]:
    """The non-empty, non-comment lines of a secret file; ConfigError naming ``option`` when it
    cannot be read or holds nothing (an empty tokens file must not silently turn auth off)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{option} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not lines:
        raise ConfigError(f"{option} {path}: the file holds no value")
    return lines


def exposed_to_others(path: str) -> str:
    """The mode (``"0644"``) of a secret file that group or others may read or write, else ""."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return ""
    return f"{mode:04o}" if mode & 0o077 else ""


def load_tokens(tokens: Iterable[str], tokens_file: str = "") -> list[str]:
    """Tokens from MYAGENT_WS_AUTH_TOKENS (comma separated) and --auth-tokens-file."""
    result = [t.strip() for t in tokens if t and t.strip()]
    if tokens_file:
        result += read_secret_file(tokens_file, "--auth-tokens-file")
    return result


def redact(path: str) -> str:
    """The request path without its query string (it may hold a token)."""
    return path.split("?", 1)[0] + ("?…" if "?" in path else "")


def unauthorized(token: str | None) -> str:
    """The body of a 401: what was wrong and how a token is passed (the two ways
    ``presented_token`` reads one); never echoes what was sent."""
    problem = "invalid token" if token else "a token is required"
    return (f"{problem}: send the header 'Authorization: Bearer <token>' or add ?token=<token> to the URL "
            "(myagent-ws chat and status read it from MYAGENT_WS_TOKEN)")


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


class Guard:
    def __init__(self, tokens: list[str], allow_origins: Iterable[str], max_per_address: int,
                 hosts: HostCheck | None = None) -> None:
        # Principals are named by a digest prefix, so the token itself is never kept or logged.
        self._tokens = [(_digest(t), "token:" + hashlib.sha256(t.encode()).hexdigest()[:12]) for t in tokens]
        self.allow_origins = {o.rstrip("/") for o in allow_origins}
        self.max_per_address = max_per_address
        self.per_address: Counter[str] = Counter()
        self.hosts = hosts if hosts is not None else HostCheck()

    def host_allowed(self, headers: Any) -> bool:
        value, single = single_header(headers, "Host")
        return single and self.hosts.allowed(value)

    @property
    def auth_enabled(self) -> bool:
        return bool(self._tokens)

    def presented_token(self, path: str, headers: Any) -> str | None:
        auth = single_header(headers, "Authorization")[0] or ""  # repeated: no token
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
        if not self.host_allowed(headers):
            return None, Refusal(403, "host not allowed")
        token = self.presented_token(path, headers)
        principal = self.principal(token)
        if principal is None:
            return None, Refusal(401, unauthorized(token))
        origin, single = single_header(headers, "Origin")
        if not single or not self.origin_allowed(origin, single_header(headers, "Host")[0]):
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
