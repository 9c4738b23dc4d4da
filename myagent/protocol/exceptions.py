"""Exceptions of the protocol core.

Hierarchy::

    ProtocolError                 base; .code (ErrorCode), .message, .field
    ├── InvalidJSON               INVALID_JSON      inbound text is not a usable JSON object
    ├── SchemaViolation           SCHEMA_VIOLATION  JSON object that breaks the client schema
    ├── UnknownEvent              UNKNOWN_EVENT     ``event`` names no client event
    └── FrameError                INTERNAL_ERROR    pipe framing (supervisor <-> sandbox) broken
        └── FrameTooLarge         INTERNAL_ERROR    a pipe frame over the configured maximum

``message`` is always safe to send to a client: it is short (clipped to
:data:`MAX_MESSAGE_CHARS`), never holds a traceback and never echoes more than
a few dozen characters of the offending input. ``field`` is the dotted JSON
path of the offending field (``"content"``, ``"content.last_seq"``) or None.
Errors of the pipe codec are server bugs, hence ``INTERNAL_ERROR``: they are
logged, and the client only learns that something went wrong.
"""

from __future__ import annotations

from .errors import ErrorCode

__all__ = [
    "MAX_MESSAGE_CHARS",
    "ProtocolError",
    "InvalidJSON",
    "SchemaViolation",
    "UnknownEvent",
    "FrameError",
    "FrameTooLarge",
]

MAX_MESSAGE_CHARS = 300


class ProtocolError(Exception):
    """Base class: a protocol rule was broken. Maps to exactly one error code."""

    default_code: ErrorCode = ErrorCode.INTERNAL_ERROR

    code: str
    message: str
    field: str | None

    def __init__(self, message: str, field: str | None = None, code: str | None = None) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = self.default_code if code is None else code

    def __reduce__(self):  # keep pickling/copying working despite the custom __init__
        return (type(self), (self.message, self.field, self.code))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, field={self.field!r}, code={str(self.code)!r})"


class InvalidJSON(ProtocolError):
    """Inbound client text is not a JSON object we accept (see ``wirejson``)."""

    default_code = ErrorCode.INVALID_JSON


class SchemaViolation(ProtocolError):
    """A JSON object that breaks the client schema; ``field`` names where."""

    default_code = ErrorCode.SCHEMA_VIOLATION


class UnknownEvent(ProtocolError):
    """The frame's ``event`` is a string that names no client event."""

    default_code = ErrorCode.UNKNOWN_EVENT


class FrameError(ProtocolError):
    """The pipe byte stream cannot be decoded; the stream must be dropped."""

    default_code = ErrorCode.INTERNAL_ERROR


class FrameTooLarge(FrameError):
    """A pipe frame is larger than the configured maximum (checked from its header)."""
