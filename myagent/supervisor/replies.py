"""What the front process says when it refuses a request: one error type, one event shape."""

from __future__ import annotations

import time
from typing import Any

from myagent.protocol.envelope import encode_event_bytes, iso_utc, make_event
from myagent.protocol.errors import ErrorCode


class ClientError(Exception):
    """A refused client request: becomes one system.error, nothing else happens."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def system_event(event: str, content: Any = None, metadata: dict | None = None) -> bytes:
    """A connection-scoped event (no session, no seq)."""
    return encode_event_bytes(make_event(event, content=content, metadata=metadata, timestamp=iso_utc(time.time())))
