"""Logging setup: text for people, JSON lines for machines.

Lifecycle at INFO, frames at DEBUG. Message bodies, tokens and secrets are
never logged at INFO; records carry connection/session/sandbox ids as extras.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar

import orjson

# trace_id/span_id: on the lines about a turn when tracing is on (docs/operations.md, "Traces").
_EXTRA_KEYS = ("agent", "connection_id", "session_id", "sandbox_id", "pid", "turn_id", "trace_id", "span_id")
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(agent_tag)s%(message)s"
# The agent whose work is logging, on a server with several (set per task by the front process).
AGENT: ContextVar[str] = ContextVar("myagent_agent", default="")


class AgentFilter(logging.Filter):
    """Tags each record with the current agent: ``agent`` (JSON) and ``agent_tag`` (text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "agent", None) is None:
            record.agent = AGENT.get() or None
        record.agent_tag = f"[{record.agent}] " if record.agent else ""
        return True


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


def _handler(fmt: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(AgentFilter())
    return handler


def setup_logger(name: str, level: str, fmt: str, context: logging.Filter | None = None) -> None:
    """Give one logger (a sandbox's ``myagent``) the front's format and level, without touching
    the root logger (agent code's logging stays as it was); ``context`` adds fields to records."""
    handler = _handler(fmt)
    if context is not None:
        handler.addFilter(context)
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))
    logger.propagate = False


def setup_logging(level: str = "info", fmt: str = "text", debug: bool = False) -> None:
    handler = _handler(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.INFO))
    # websockets logs every failed handshake at INFO/ERROR; keep it at WARNING unless debugging.
    logging.getLogger("websockets").setLevel(logging.DEBUG if debug else logging.WARNING)
