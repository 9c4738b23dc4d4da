"""The pure protocol core of myagent-ws: no I/O, no asyncio, no os.

Modules:

* ``events``: event names, ``PROTOCOL_VERSION``
* ``errors``: ``ErrorCode``, recoverability, descriptions
* ``exceptions``: ``ProtocolError`` and its subclasses
* ``envelope``: server -> client envelopes, timestamps, encoding
* ``wirejson``: inbound client text -> dict, JSON edge cases
* ``schema``: the published JSON Schema, client frame validation
* ``framing``: the supervisor <-> sandbox pipe frame codec

A test (``tests/protocol/test_purity.py``) keeps every module free of
asyncio, socket, os, subprocess, threading, select and signal imports.
"""

from .envelope import encode_event, iso_utc, make_event
from .errors import ERROR_DESCRIPTIONS, RECOVERABLE, ErrorCode, is_recoverable
from .events import CLIENT_EVENTS, PROTOCOL_VERSION, SERVER_EVENTS, TERMINAL_EVENTS
from .exceptions import FrameError, FrameTooLarge, InvalidJSON, ProtocolError, SchemaViolation, UnknownEvent
from .framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from .schema import CLIENT_SCHEMA, SERVER_SCHEMA, schema_document, validate_client_frame
from .wirejson import parse_client_frame

__all__ = [
    "PROTOCOL_VERSION", "CLIENT_EVENTS", "SERVER_EVENTS", "TERMINAL_EVENTS",
    "ErrorCode", "RECOVERABLE", "ERROR_DESCRIPTIONS", "is_recoverable",
    "ProtocolError", "InvalidJSON", "SchemaViolation", "UnknownEvent", "FrameError", "FrameTooLarge",
    "iso_utc", "make_event", "encode_event",
    "parse_client_frame",
    "CLIENT_SCHEMA", "SERVER_SCHEMA", "validate_client_frame", "schema_document",
    "DEFAULT_MAX_FRAME", "encode_frame", "FrameDecoder",
]
