"""Stable error codes of the client protocol (v1).

Every error event (``system.error`` / ``agent.error``) carries
``metadata.error_code`` (one of :class:`ErrorCode`) and
``metadata.recoverable`` (from :data:`RECOVERABLE`).

What ``recoverable`` means, for a client deciding what to do next:

* ``True``: the connection and the session (if any) remain usable. Retrying
  can succeed, possibly after fixing the frame, waiting, slowing down or
  reconnecting with the session's resume token.
* ``False``: repeating the same request cannot succeed. The client has to
  start over (new session, new credentials, fresh state export), or an
  operator has to act.

Codes are part of the published protocol: never rename or remove one, only add.
:data:`ERROR_DESCRIPTIONS` has one line per code and feeds the generated docs.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = ["ErrorCode", "RECOVERABLE", "ERROR_DESCRIPTIONS", "is_recoverable", "error_metadata"]


class ErrorCode(str, Enum):
    """A stable, documented error code. Serializes (orjson, ``str()``) as its value."""

    # -- bad input from the client --------------------------------------------
    INVALID_JSON = "INVALID_JSON"
    SCHEMA_VIOLATION = "SCHEMA_VIOLATION"
    UNKNOWN_EVENT = "UNKNOWN_EVENT"
    UNSUPPORTED_FRAME = "UNSUPPORTED_FRAME"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    # -- session and turn state -------------------------------------------------
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_BUSY = "SESSION_BUSY"
    SESSION_QUARANTINED = "SESSION_QUARANTINED"
    NO_ACTIVE_TURN = "NO_ACTIVE_TURN"
    STEP_NOT_FOUND = "STEP_NOT_FOUND"
    # -- limits and admission -----------------------------------------------------
    RATE_LIMITED = "RATE_LIMITED"
    SERVER_BUSY = "SERVER_BUSY"
    TOO_MANY_SESSIONS = "TOO_MANY_SESSIONS"
    UNAUTHORIZED = "UNAUTHORIZED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    # -- the agent and its sandbox ------------------------------------------------
    AGENT_UNAVAILABLE = "AGENT_UNAVAILABLE"
    LLM_ERROR = "LLM_ERROR"
    TOOL_ERROR = "TOOL_ERROR"
    MAX_STEPS = "MAX_STEPS"
    SANDBOX_CRASHED = "SANDBOX_CRASHED"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    CPU_LIMIT = "CPU_LIMIT"
    PROCESS_LIMIT = "PROCESS_LIMIT"
    TURN_TIMEOUT = "TURN_TIMEOUT"
    WORKER_TIMEOUT = "WORKER_TIMEOUT"
    CANCELLED = "CANCELLED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    SERVER_RESTARTED = "SERVER_RESTARTED"
    SESSION_CLOSED = "SESSION_CLOSED"
    SANDBOX_MISBEHAVED = "SANDBOX_MISBEHAVED"
    # -- reconnect, replay and state export -------------------------------------
    INVALID_RESUME_TOKEN = "INVALID_RESUME_TOKEN"
    REPLAY_UNAVAILABLE = "REPLAY_UNAVAILABLE"
    STATE_INVALID = "STATE_INVALID"
    STATE_EXPIRED = "STATE_EXPIRED"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    # -- everything else ----------------------------------------------------------
    INTERNAL_ERROR = "INTERNAL_ERROR"

    # A str-mixin Enum would otherwise print as "ErrorCode.X" in f-strings/logs.
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


_E = ErrorCode

RECOVERABLE: dict[ErrorCode, bool] = {
    # The connection stays open after a bad frame: fix it and send again.
    _E.INVALID_JSON: True,
    _E.SCHEMA_VIOLATION: True,
    _E.UNKNOWN_EVENT: True,
    _E.UNSUPPORTED_FRAME: True,  # send a text frame instead
    _E.MESSAGE_TOO_LARGE: True,  # a shorter message will be accepted
    # The session id will never resolve for this client (deleted, expired or
    # someone else's; existence is not revealed): create a new session.
    _E.SESSION_NOT_FOUND: False,
    _E.SESSION_BUSY: True,  # wait for the running turn's terminal event
    # Its turns kept crashing the sandbox: it runs no more (history kept; export it, start anew).
    _E.SESSION_QUARANTINED: False,
    _E.NO_ACTIVE_TURN: True,  # harmless: nothing was running
    _E.STEP_NOT_FOUND: True,  # harmless: the confirmation already expired
    _E.RATE_LIMITED: True,  # slow down, then retry
    _E.SERVER_BUSY: True,  # transient overload: retry with backoff
    _E.TOO_MANY_SESSIONS: True,  # close a session, then retry
    _E.UNAUTHORIZED: False,  # the same credentials will fail again
    _E.BUDGET_EXCEEDED: True,  # the session goes on; turns run again once the budget resets
    # Restart budget exhausted: the agent is broken until an operator acts,
    # retrying only adds load.
    _E.AGENT_UNAVAILABLE: False,
    # A turn failed, the session survives: the next user.message works.
    _E.LLM_ERROR: True,
    _E.TOOL_ERROR: True,
    _E.MAX_STEPS: True,
    # The sandbox was replaced and the session restored on a healthy one.
    _E.SANDBOX_CRASHED: True,
    _E.MEMORY_LIMIT: True,
    _E.CPU_LIMIT: True,
    _E.PROCESS_LIMIT: True,
    _E.TURN_TIMEOUT: True,
    _E.WORKER_TIMEOUT: True,
    _E.CANCELLED: True,  # the user asked for it; the session goes on
    # The node is draining; the session outlives it: reconnect (to this server
    # after its restart or to another node) with the resume token.
    _E.SHUTTING_DOWN: True,
    _E.SERVER_RESTARTED: True,
    _E.SESSION_CLOSED: False,  # the session is gone; create a new one
    _E.SANDBOX_MISBEHAVED: True,  # replaced like a crash; the session was restored
    _E.INVALID_RESUME_TOKEN: False,  # the same token will be refused again
    _E.REPLAY_UNAVAILABLE: False,  # trimmed events are gone for good
    _E.STATE_INVALID: False,  # bad signature or corrupt export
    _E.STATE_EXPIRED: False,  # export again from a live session
    _E.STORE_UNAVAILABLE: True,  # transient backend outage (SQLite/Redis)
    # Unknown server state after a bug: do not loop on it.
    _E.INTERNAL_ERROR: False,
}

ERROR_DESCRIPTIONS: dict[ErrorCode, str] = {
    _E.INVALID_JSON: "The text frame is not a valid JSON object (syntax, encoding, number range or nesting depth).",
    _E.SCHEMA_VIOLATION: "The frame is JSON but breaks the client schema; metadata.field names the offending field.",
    _E.UNKNOWN_EVENT: "The frame's event is not a client event of this protocol version.",
    _E.UNSUPPORTED_FRAME: "A binary WebSocket frame was received; the protocol uses text frames only.",
    _E.MESSAGE_TOO_LARGE: "The message or its content exceeds the server's configured size limit.",
    _E.SESSION_NOT_FOUND: "No session with this id is available to this connection.",
    _E.SESSION_BUSY: "The session is already running a turn; wait for its terminal event.",
    _E.SESSION_QUARANTINED: "The session's turns kept crashing their sandbox; it runs no more turns (history kept).",
    _E.NO_ACTIVE_TURN: "There is no running turn to cancel or answer.",
    _E.STEP_NOT_FOUND: "No pending confirmation has this step_id.",
    _E.RATE_LIMITED: "Too many frames in too short a time on this connection.",
    _E.SERVER_BUSY: "The server is at capacity; retry later.",
    _E.TOO_MANY_SESSIONS: "The per-connection or per-client session limit is reached.",
    _E.UNAUTHORIZED: "Missing or invalid credentials.",
    _E.BUDGET_EXCEEDED: "The token budget (per day or per turn) is spent; metadata.resets_at says when it resets.",
    _E.AGENT_UNAVAILABLE: "The agent cannot be started (restart budget exhausted or failed to load).",
    _E.LLM_ERROR: "The language model endpoint failed after bounded retries.",
    _E.TOOL_ERROR: "A tool failed in a way that ended the turn.",
    _E.MAX_STEPS: "The turn reached the agent's maximum number of steps.",
    _E.SANDBOX_CRASHED: "The sandbox process running the turn died; the session was restored elsewhere.",
    _E.MEMORY_LIMIT: "The sandbox exceeded its memory limit and was replaced.",
    _E.CPU_LIMIT: "The sandbox exceeded its CPU limit and was replaced.",
    _E.PROCESS_LIMIT: "The sandbox held more processes than its cap (--sandbox-max-procs) and was replaced.",
    _E.TURN_TIMEOUT: "The turn exceeded its time limit.",
    _E.WORKER_TIMEOUT: "The sandbox stopped responding (blocked event loop) and was replaced.",
    _E.CANCELLED: "The turn was cancelled at the client's request.",
    _E.SHUTTING_DOWN: "The server is shutting down; reconnect with the session's resume token.",
    _E.SESSION_CLOSED: "The session was closed while a turn was running.",
    _E.SANDBOX_MISBEHAVED: "The sandbox sent frames for sessions or turns it does not own and was replaced.",
    _E.SERVER_RESTARTED: "The server (or node) running the turn went down; the session was restored from the store.",
    _E.INVALID_RESUME_TOKEN: "The resume token does not match the session.",
    _E.REPLAY_UNAVAILABLE: "The requested events are no longer buffered and cannot be replayed.",
    _E.STATE_INVALID: "The exported state's signature or content is invalid.",
    _E.STATE_EXPIRED: "The exported state is older than the server accepts.",
    _E.STORE_UNAVAILABLE: "The session store is temporarily unreachable.",
    _E.INTERNAL_ERROR: "An unexpected server error; details are in the server log, not here.",
}

_BY_VALUE: dict[str, bool] = {code.value: flag for code, flag in RECOVERABLE.items()}


def is_recoverable(code: ErrorCode | str) -> bool:
    """Whether a client may carry on after an error with ``code``.

    Unknown codes are not recoverable: a client must not retry what it does
    not understand.
    """
    value = code.value if isinstance(code, ErrorCode) else code
    return _BY_VALUE.get(value, False)


def error_metadata(code: ErrorCode | str, **extra: Any) -> dict:
    """The metadata every error event carries: ``error_code``, ``recoverable`` and ``extra``."""
    code = ErrorCode(code)
    return {"error_code": code.value, "recoverable": _BY_VALUE.get(code.value, False), **extra}
