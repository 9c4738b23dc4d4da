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

Session events are built in two halves, so that the front process never
re-encodes what a sandbox produced: :func:`event_body` encodes the part the
agent's side decides (``step_id``, ``content``, ``metadata``, metadata last),
:func:`session_envelope` puts the part only the front may decide (event name,
timestamp, session id, seq, event id, connection id) around those bytes.
:func:`check_event_body` is what makes that safe for bytes from an untrusted
sandbox: they must parse, hold only those three keys with metadata last, and
name the turn they belong to; what is spliced is their canonical re-encoding.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

__all__ = ["iso_utc", "now_iso", "make_event", "event_id", "parse_event_id", "encode_event", "encode_event_bytes",
           "event_body", "check_event_body", "session_envelope", "utc_stamp", "BODY_KEYS"]

BODY_KEYS = frozenset({"step_id", "content", "metadata"})
MAX_STEP_ID = 128  # a step id is a model's tool-call id: the front keeps the pending ones
# Metadata keys only the front process writes; a body that carries one is refused.
_FRONT_METADATA = "connection_id"

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


# (millisecond, its iso_utc bytes) of the last utc_stamp call.
_stamp_cache: tuple[int, bytes] = (-1, b"")


def utc_stamp(epoch: float) -> bytes:
    """:func:`iso_utc` as bytes, formatted once per millisecond: many events share one."""
    global _stamp_cache
    key = round(epoch * 1_000_000) // 1000
    cached = _stamp_cache
    if cached[0] == key:
        return cached[1]
    stamp = iso_utc(epoch).encode()
    _stamp_cache = (key, stamp)
    return stamp


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


def event_body(content: Any, metadata: dict, step_id: str | None = None) -> bytes:
    """The agent-side half of a session event: ``{"step_id"?, "content", "metadata"}``.

    Values orjson cannot encode natively (a tool's odd return type) become strings.
    """
    if step_id is None:
        doc = {"content": content, "metadata": metadata}
    else:
        doc = {"step_id": step_id, "content": content, "metadata": metadata}
    return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)


def check_event_body(body: bytes, turn_id: str) -> tuple[dict, bytes] | None:
    """What untrusted ``body`` says, and the bytes to splice into an envelope for ``turn_id``; None
    if it may not be relayed.

    The body must be a JSON object with only :data:`BODY_KEYS`, metadata last,
    naming ``turn_id``, without ``connection_id``, and a string or null
    ``step_id``. What is spliced is orjson's re-encoding of what was checked
    (0.15 µs): compact, metadata last and non-empty, and free of the duplicate
    keys a parser keeping the first value would read differently.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or next(reversed(doc), None) != "metadata":
        return None
    meta = doc["metadata"]
    if type(meta) is not dict or meta.get("turn_id") != turn_id or _FRONT_METADATA in meta:
        return None
    if len(doc) > 1 and not BODY_KEYS.issuperset(doc):
        return None
    step = doc.get("step_id")
    if step is not None and (type(step) is not str or len(step) > MAX_STEP_ID):
        return None
    return doc, orjson.dumps(doc)


def session_envelope(event: bytes, timestamp: bytes, session_id: bytes, seq: int, body: bytes,
                     connection_id: bytes | None) -> bytes:
    """One session event as wire bytes: the front's fields, then ``body`` (from :func:`event_body` or
    :func:`check_event_body`), with ``connection_id`` appended to its metadata. Everything is bytes
    already: this runs once per event delivered."""
    if connection_id is None:
        return b'{"event":"%s","timestamp":"%s","session_id":"%s","seq":%d,"event_id":"%s:%d",%s' % (
            event, timestamp, session_id, seq, session_id, seq, body[1:])
    return b'{"event":"%s","timestamp":"%s","session_id":"%s","seq":%d,"event_id":"%s:%d",%s%s"connection_id":"%s"}}' % (
        event, timestamp, session_id, seq, session_id, seq, body[1:-2], b"" if body.endswith(b"{}}") else b",",
        connection_id)
