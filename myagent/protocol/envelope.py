"""Server -> client event envelopes: build, timestamp, encode.

Envelope keys, in this order (clients and logs read better with a stable
order; orjson keeps insertion order)::

    event, timestamp, session_id?, seq?, event_id?, step_id?, content, metadata

``session_id`` appears only on session-scoped events, ``seq``/``event_id``
only when a sequence number is given (``event_id`` is ``"<session_id>:<seq>"``),
``step_id`` only when given. ``content`` is always present (may be null) and
``metadata`` is always an object.

Encoding uses orjson: ``float('nan')`` and infinities anywhere in the envelope
serialize as ``null`` (orjson's behaviour, and valid JSON unlike Python's
``NaN``); ints beyond the 64-bit range and non-str dict keys raise
``orjson.JSONEncodeError`` (a ``TypeError``), as do unsupported types.
Enums (e.g. :class:`~myagent.protocol.errors.ErrorCode`) serialize as their value.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

__all__ = ["iso_utc", "now_iso", "make_event", "event_id", "parse_event_id", "encode_event", "encode_event_bytes"]

# (whole second, "YYYY-MM-DDTHH:MM:SS.") of the last call. One tuple, so a
# concurrent reader never sees a second from one call and a prefix from another.
_second_cache: tuple[int, str] = (-(1 << 62), "")


def iso_utc(epoch: float) -> str:
    """Format a Unix time as ISO 8601 UTC with milliseconds: ``2026-11-25T16:32:25.123Z``.

    Hot path (one call per event): the date/time part is formatted once per
    whole second and cached. Milliseconds are truncated, like
    ``datetime.isoformat(timespec="milliseconds")``.
    """
    global _second_cache
    # Round to microseconds first (as datetime does), then truncate to ms, so
    # 0.123 does not become 0.122 through float representation error.
    sec, ms = divmod(round(epoch * 1_000_000) // 1000, 1000)
    cached_sec, prefix = _second_cache
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
        _second_cache = (sec, prefix)
    return f"{prefix}{ms:03d}Z"


def now_iso() -> str:
    """The current wall-clock time formatted by :func:`iso_utc`."""
    return iso_utc(time.time())


def event_id(session_id: str, seq: int) -> str:
    """The event id of event ``seq`` of session ``session_id``."""
    return f"{session_id}:{seq}"


def parse_event_id(value: str) -> tuple[str, int] | None:
    """Split ``"<session_id>:<seq>"`` into ``(session_id, seq)``; None if malformed.

    Session ids may themselves contain ``:``; the seq is after the last one.
    Used for ``user.ack`` frames that carry only ``content.last_event_id``.
    """
    session_id, sep, seq = value.rpartition(":")
    if not sep or not session_id or not seq.isascii() or not seq.isdigit():
        return None
    return session_id, int(seq)


def make_event(
    event: str,
    *,
    session_id: str | None = None,
    seq: int | None = None,
    content: Any = None,
    metadata: dict | None = None,
    step_id: str | None = None,
    timestamp: str,
) -> dict:
    """Build one server -> client envelope (keys in protocol order).

    ``metadata`` is used as given, not copied. ``seq`` requires ``session_id``
    (an event id names its session).
    """
    d: dict[str, Any] = {"event": event, "timestamp": timestamp}
    if session_id is not None:
        d["session_id"] = session_id
    if seq is not None:
        if session_id is None:
            raise ValueError("make_event: seq requires session_id")
        d["seq"] = seq
        d["event_id"] = f"{session_id}:{seq}"
    if step_id is not None:
        d["step_id"] = step_id
    d["content"] = content
    d["metadata"] = {} if metadata is None else metadata
    return d


def encode_event(d: dict) -> str:
    """Encode an envelope as JSON text for a WebSocket text frame."""
    return orjson.dumps(d).decode()


def encode_event_bytes(d: dict) -> bytes:
    """Encode an envelope as UTF-8 JSON bytes.

    Saves a decode/encode round trip where the transport can send UTF-8 bytes
    as a text frame (websockets >= 13: ``send(data, text=True)``).
    """
    return orjson.dumps(d)
