"""Logging setup: text for people, JSON lines for machines.

Lifecycle at INFO, frames at DEBUG. Message bodies, tokens and secrets are
never logged at INFO; records carry connection/session/sandbox ids as extras.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

_EXTRA_KEYS = ("connection_id", "session_id", "sandbox_id", "pid")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        for key in _EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        # OPT_PASSTHROUGH is not needed: default=str turns anything odd into text, never a crash.
        return orjson.dumps(doc, default=str).decode()


def setup_logging(level: str = "info", fmt: str = "text", debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.INFO))
    # websockets logs every failed handshake at INFO/ERROR; keep it at WARNING unless debugging.
    logging.getLogger("websockets").setLevel(logging.DEBUG if debug else logging.WARNING)
