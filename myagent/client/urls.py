"""Server addresses as people type them, for `chat` (WebSocket) and `status` (HTTP).

One server answers both on one port, so every command accepts every form:
``ws://``, ``wss://``, ``http://``, ``https://`` or a bare ``HOST:PORT``
(plain, no TLS). Pure: no I/O.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

# scheme typed -> (HTTP scheme, WebSocket scheme) of the same server
_SCHEMES = {"http": ("http", "ws"), "ws": ("http", "ws"), "https": ("https", "wss"), "wss": ("https", "wss")}


def _split(url: str) -> SplitResult:
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError(f"{url!r}: unsupported scheme {parts.scheme!r}; use ws://, wss://, http://, https:// "
                         "or HOST:PORT")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host name")
    try:
        parts.port  # noqa: B018 - urllib checks the port only when asked
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number from 0 to 65535") from None
    return parts


def http_url(url: str) -> str:
    """The http(s) base of a server URL (no query, no trailing slash): ``status`` appends /ready."""
    parts = _split(url)
    return urlunsplit((_SCHEMES[parts.scheme.lower()][0], parts.netloc, parts.path.rstrip("/"), "", ""))


def ws_url(url: str) -> str:
    """The ws(s) URL to connect to (path and query kept: ``?token=`` works as in the browser)."""
    parts = _split(url)
    return urlunsplit((_SCHEMES[parts.scheme.lower()][1], parts.netloc, parts.path, parts.query, ""))
