"""What the front process says when it refuses a request: one error type, one event shape."""

from __future__ import annotations

import time
from typing import Any

import orjson

from myagent.protocol.envelope import iso_utc
from myagent.protocol.errors import ErrorCode, is_recoverable


class ClientError(Exception):
    """A refused client request: becomes one system.error, nothing else happens."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def system_event(event: str, content: Any = None, metadata: dict | None = None) -> bytes:
    """A connection-scoped event (no session, no seq)."""
    return orjson.dumps({"event": event, "timestamp": iso_utc(time.time()), "content": content,
                         "metadata": metadata or {}})


def error_metadata(code: ErrorCode | str, **extra: Any) -> dict:
    code = ErrorCode(code)
    return {"error_code": code.value, "recoverable": is_recoverable(code), **extra}
