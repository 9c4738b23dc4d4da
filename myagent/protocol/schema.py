"""The published JSON Schema of protocol v1, and fast validation of client frames.

``CLIENT_SCHEMA`` describes every client -> server frame, ``SERVER_SCHEMA``
every server -> client envelope (draft-07: what fastjsonschema supports well;
``jsonschema`` checks them independently in the tests). Both are one document
with an ``if``/``then`` chain keyed on ``event``; the per-event subschemas live
in ``definitions`` and are self-contained, so :func:`validate_client_frame`
compiles one fastjsonschema validator per event at import time and runs only
the one that applies, naming the offending field in the error.

Rules shared by all client frames:

* unknown top-level fields are ignored (old clients send ``timestamp`` or
  ``metadata``), as are unknown fields inside ``content`` objects;
* ids are non-empty strings of at most 128 characters; sequence numbers are
  integers in ``[0, 2**53-1]`` (exact in JavaScript). JSON Schema counts
  ``5.0`` as an integer; such values are normalized to ``int`` in place;
* ``user.message`` content must hold a character that is not whitespace (a
  blank message would start a whole turn for nothing): ``pattern: \\S`` in the
  published schema, ``str.isspace`` here (the same set of characters; a
  JavaScript validator's ``\\s`` differs on U+FEFF, U+001C-U+001F and U+0085).
  It has no length limit here: the server enforces its configurable limit
  (``MESSAGE_TOO_LARGE``).

Compatibility decisions (clients written for the original server):

* ``user.create_session`` ``content`` may be an object (options), a string
  (the original Python client sends ``"create_session"``) or null; only an
  object carries meaning.
* ``user.ack`` may omit ``session_id`` (the original console does): the
  ``content.last_event_id`` names its session.
* ``user.reconnect_with_state`` carries the signed export as the string
  ``content.state`` (canonical). The original clients send it as top-level
  ``signed_state`` (string or object); that is accepted too, and
  :func:`state_token` returns whichever was sent.

Regenerate ``schema.json`` after editing: ``python -m myagent.protocol > myagent/protocol/schema.json``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import fastjsonschema
import orjson

from . import events as ev
from .errors import ERROR_DESCRIPTIONS, RECOVERABLE, ErrorCode
from .exceptions import SchemaViolation, UnknownEvent
from .usage import TOTALS_SCHEMA, USAGE_SCHEMA

__all__ = [
    "CLIENT_SCHEMA",
    "SERVER_SCHEMA",
    "validate_client_frame",
    "validate_server_event",
    "state_token",
    "schema_document",
    "schema_json",
]

_DRAFT = "http://json-schema.org/draft-07/schema#"
MAX_ID_LENGTH = 128
MAX_SEQ = 2**53 - 1
# At least one character that is not whitespace (a pattern is not anchored: it must match somewhere).
NOT_BLANK = r"\S"
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"

# -- building blocks -------------------------------------------------------------


def _id(what: str) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "description": what}


def _seq(what: str, **extra: Any) -> dict:
    return {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "description": what, **extra}


_SESSION_ID = _id("Session id from agent.session_created.")


def _client_event(name: str, description: str, required: Sequence[str], **properties: Any) -> dict:
    return {
        "description": description,
        "type": "object",
        "required": ["event", *required],
        "properties": {"event": {"const": name}, **properties},
    }


# -- client -> server ---------------------------------------------------------------

_CLIENT_EVENT_SCHEMAS: dict[str, dict] = {
    ev.USER_CREATE_SESSION: _client_event(
        ev.USER_CREATE_SESSION,
        "Create a session. Answer: agent.session_created.",
        [],
        content={
            "type": ["object", "string", "null"],
            "description": "Optional session options (object). Strings and null are accepted and ignored "
            "(the original Python client sends the string 'create_session').",
        },
    ),
    ev.USER_MESSAGE: _client_event(
        ev.USER_MESSAGE,
        "Start a turn. Answer: the turn's events, ending in exactly one of agent.final_answer, "
        "agent.error, agent.interrupted.",
        ["session_id", "content"],
        session_id=_SESSION_ID,
        content={"type": "string", "minLength": 1, "pattern": NOT_BLANK,
                 "description": "The user's message (not empty, not only whitespace)."},
        metadata={
            "type": "object",
            "properties": {
                "message_id": _id("Idempotency key: a repeated message_id is not run twice."),
                "multitask": {
                    "enum": list(ev.MULTITASK_MODES),
                    "description": "When a turn is already running: reject (SESSION_BUSY), enqueue (run "
                    "after it), interrupt (cancel it keeping its work, then run this) or rollback (cancel "
                    "it and drop its messages from the history, then run this). Default: the server's "
                    "--multitask.",
                },
            },
        },
    ),
    ev.USER_CANCEL: _client_event(
        ev.USER_CANCEL,
        "Cancel the running turn; it ends with agent.interrupted.",
        ["session_id"],
        session_id=_SESSION_ID,
    ),
    ev.USER_RESPONSE: _client_event(
        ev.USER_RESPONSE,
        "Answer an agent.user_confirm. content.confirmed wins if both confirmed and approved are sent.",
        ["session_id", "step_id", "content"],
        session_id=_SESSION_ID,
        step_id=_id("The step_id of the agent.user_confirm being answered."),
        content={
            "type": "object",
            "properties": {
                "confirmed": {"type": "boolean"},
                "approved": {"type": "boolean", "description": "Accepted as a synonym of confirmed."},
            },
            "anyOf": [{"required": ["confirmed"]}, {"required": ["approved"]}],
        },
    ),
    ev.USER_ACK: _client_event(
        ev.USER_ACK,
        "Acknowledge events up to a sequence number; trims the replay buffer. session_id may be "
        "omitted when content.last_event_id names the session.",
        ["content"],
        session_id=_SESSION_ID,
        content={
            "type": "object",
            "properties": {
                "last_seq": _seq("Highest seq received."),
                "last_event_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_ID_LENGTH + 20,
                    "description": "event_id ('<session_id>:<seq>') of the last event received.",
                },
            },
            "anyOf": [{"required": ["last_seq"]}, {"required": ["last_event_id"]}],
        },
    ),
    ev.USER_RECONNECT: _client_event(
        ev.USER_RECONNECT,
        "Re-attach a session to this connection and replay every event after content.last_seq. "
        "Answer: the replayed events (seq order), then agent.session_resumed.",
        ["session_id", "content"],
        session_id=_SESSION_ID,
        content={
            "type": "object",
            "required": ["resume_token"],
            "properties": {
                "resume_token": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "description": "metadata.resume_token of agent.session_created.",
                },
                "last_seq": _seq("Highest seq received; 0 replays everything buffered.", default=0),
            },
        },
    ),
    ev.USER_CLOSE_SESSION: _client_event(
        ev.USER_CLOSE_SESSION,
        "Close a session. Answer: agent.session_end.",
        ["session_id"],
        session_id=_SESSION_ID,
    ),
    ev.USER_REQUEST_STATE: _client_event(
        ev.USER_REQUEST_STATE,
        "Export the session's state, signed (HMAC). Answer: agent.state_exported.",
        ["session_id"],
        session_id=_SESSION_ID,
    ),
    ev.USER_RECONNECT_WITH_STATE: {
        **_client_event(
            ev.USER_RECONNECT_WITH_STATE,
            "Restore a session from a signed export. Answer: agent.state_restored. The export goes in "
            "content.state; top-level signed_state (original clients) is accepted too.",
            [],
            session_id=_SESSION_ID,
            content={
                "type": "object",
                "required": ["state"],
                "properties": {
                    "state": {"type": "string", "minLength": 1, "description": "The signed state token."},
                },
            },
            signed_state={
                "type": ["string", "object"],
                "description": "Legacy location of the signed export (original protocol).",
            },
        ),
        "anyOf": [{"required": ["content"]}, {"required": ["signed_state"]}],
    },
}


def _chain(schemas: dict[str, dict]) -> list[dict]:
    return [
        {"if": {"properties": {"event": {"const": name}}}, "then": {"$ref": f"#/definitions/{name}"}}
        for name in sorted(schemas)
    ]


CLIENT_SCHEMA: dict = {
    "$schema": _DRAFT,
    "title": f"myagent-ws client -> server frame (protocol v{ev.PROTOCOL_VERSION})",
    "description": "One JSON object per WebSocket text frame. Unknown fields are ignored.",
    "type": "object",
    "required": ["event"],
    "properties": {"event": {"type": "string", "enum": sorted(_CLIENT_EVENT_SCHEMAS)}},
    "allOf": _chain(_CLIENT_EVENT_SCHEMAS),
    "definitions": _CLIENT_EVENT_SCHEMAS,
}

# -- server -> client ---------------------------------------------------------------

_SESSION_SCOPED = ["session_id", "seq", "event_id"]
_TURN_ID = {"type": ["string", "integer"], "description": "Identifies the turn (one user.message)."}


def _server_event(
    description: str,
    required: Sequence[str] = (),
    *,
    content: dict | None = None,
    metadata_required: Sequence[str] = (),
    **metadata_properties: Any,
) -> dict:
    schema: dict[str, Any] = {"description": description}
    if required:
        schema["required"] = list(required)
    properties: dict[str, Any] = {}
    if content is not None:
        properties["content"] = content
    if metadata_required or metadata_properties:
        meta: dict[str, Any] = {"type": "object"}
        if metadata_required:
            meta["required"] = list(metadata_required)
        if metadata_properties:
            meta["properties"] = metadata_properties
        properties["metadata"] = meta
    if properties:
        schema["properties"] = properties
    return schema


def _turn_event(description: str, required: Sequence[str] = (), **kw: Any) -> dict:
    kw["metadata_required"] = ["turn_id", *kw.get("metadata_required", ())]
    return _server_event(description, [*_SESSION_SCOPED, *required], turn_id=_TURN_ID, **kw)


_STRING = {"type": "string"}
# On a turn's terminal event when traces are exported (docs/operations.md, "Traces").
_TRACE_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$",
             "description": "The OpenTelemetry trace id of the turn (W3C, 32 hex digits)."}
_ERROR = {
    "content": {"type": "string", "description": "Human-readable error text (never a traceback)."},
    "metadata_required": ["error_code", "recoverable"],
    "error_code": {"type": "string", "enum": [code.value for code in ErrorCode]},
    "recoverable": {"type": "boolean"},
}

_SERVER_EVENT_SCHEMAS: dict[str, dict] = {
    ev.SYSTEM_CONNECTED: _server_event(
        "First event of a connection: protocol and server version, connection id, limits.",
        metadata_required=["connection_id"],
        connection_id=_STRING,
    ),
    ev.SYSTEM_HEARTBEAT: _server_event("Keep-alive."),
    ev.SYSTEM_NOTICE: _server_event("Informational notice (e.g. draining, sandbox restarted)."),
    ev.SYSTEM_ERROR: _server_event("Connection-level error.", **_ERROR),
    ev.AGENT_SESSION_CREATED: _server_event(
        "Answer to user.create_session.",
        _SESSION_SCOPED,
        metadata_required=["resume_token", "agent_name", "usage"],
        resume_token=_STRING,
        agent_name=_STRING,
        usage=TOTALS_SCHEMA,
    ),
    ev.AGENT_THINKING: _turn_event("The agent's reasoning for a step."),
    ev.AGENT_TOOL_CALL: _turn_event(
        "A tool call starts; agent.tool_result with the same step_id follows.",
        ["step_id"],
        content=_STRING,
        metadata_required=["tool", "args", "status"],
        tool=_STRING,
        status={"const": "running"},
    ),
    ev.AGENT_TOOL_RESULT: _turn_event(
        "A tool call's output.",
        ["step_id"],
        content=_STRING,
        metadata_required=["tool", "status"],
        tool=_STRING,
        status={"enum": ["success", "failed"]},
    ),
    ev.AGENT_PARTIAL_ANSWER: _turn_event("A delta of the answer being streamed.", content=_STRING),
    ev.AGENT_FINAL_ANSWER: _turn_event("The turn's answer (terminal).", content=_STRING,
                                       metadata_required=["usage"], usage=USAGE_SCHEMA, trace_id=_TRACE_ID),
    ev.AGENT_USER_CONFIRM: _turn_event(
        "A tool waits for confirmation; answer with user.response echoing step_id.",
        ["step_id"],
        metadata_required=["tool_name", "tool_args", "tool_description"],
        tool_name=_STRING,
    ),
    ev.AGENT_ERROR: _server_event("Session or turn error (terminal when it ends a turn; then with metadata.usage).",
                                  **_ERROR, usage=USAGE_SCHEMA, trace_id=_TRACE_ID),
    ev.AGENT_INTERRUPTED: _turn_event("The turn was interrupted (terminal); metadata says why.",
                                      metadata_required=["usage"], usage=USAGE_SCHEMA, trace_id=_TRACE_ID),
    ev.AGENT_SESSION_END: _server_event("The session is closed.", _SESSION_SCOPED),
    ev.AGENT_SESSION_RESUMED: _server_event("Answer to user.reconnect, after the replayed events.", _SESSION_SCOPED,
                                            metadata_required=["usage"], usage=TOTALS_SCHEMA),
    ev.AGENT_STATE_EXPORTED: _server_event(
        "Answer to user.request_state: the signed export, in content.state and (for the original "
        "MyAgent clients) metadata.signed_state.",
        ["session_id"],
        content={"type": "object", "required": ["state"], "properties": {"state": _STRING}},
        metadata_required=["signed_state"],
        signed_state=_STRING,
    ),
    ev.AGENT_STATE_RESTORED: _server_event("Answer to user.reconnect_with_state.", ["session_id"]),
    ev.AGENT_MESSAGE_QUEUED: _server_event(
        "A user.message waits for the running turn (or a restore) to end; it runs as metadata.turn_id.",
        _SESSION_SCOPED,
        metadata_required=["turn_id", "position"],
        turn_id=_TURN_ID,
        position={"type": "integer", "minimum": 1},
    ),
}

SERVER_SCHEMA: dict = {
    "$schema": _DRAFT,
    "title": f"myagent-ws server -> client event (protocol v{ev.PROTOCOL_VERSION})",
    "type": "object",
    "required": ["event", "timestamp", "content", "metadata"],
    "properties": {
        "event": {"type": "string", "enum": sorted(_SERVER_EVENT_SCHEMAS)},
        "timestamp": {"type": "string", "pattern": TIMESTAMP_PATTERN, "description": "ISO 8601 UTC, ms."},
        "session_id": {"type": "string", "minLength": 1},
        "seq": {"type": "integer", "minimum": 1, "description": "Per session, from 1, no gaps."},
        "event_id": {"type": "string", "pattern": "^.+:[1-9][0-9]*$", "description": "'<session_id>:<seq>'"},
        "step_id": {"type": "string", "minLength": 1},
        "content": {"description": "Human-facing payload (string, object or null)."},
        "metadata": {"type": "object", "description": "Machine-readable detail."},
    },
    "dependencies": {"seq": ["session_id", "event_id"], "event_id": ["seq"]},
    "allOf": _chain(_SERVER_EVENT_SCHEMAS),
    "definitions": _SERVER_EVENT_SCHEMAS,
}

# -- validation -----------------------------------------------------------------------

_TYPE_WORDS = {
    "string": "a string",
    "object": "an object",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "null": "null",
}


def _violation(exc: fastjsonschema.JsonSchemaValueException) -> SchemaViolation:
    """Translate a fastjsonschema error into a SchemaViolation naming the field."""
    field = ".".join(exc.path[1:]) or None  # drop the leading "data"
    rule, rule_def = exc.rule, exc.rule_definition
    where = f"'{field}'" if field else "the frame"
    if rule == "required":
        value = exc.value if isinstance(exc.value, dict) else {}
        missing = next((key for key in rule_def if key not in value), rule_def[0])
        field = f"{field}.{missing}" if field else missing
        return SchemaViolation(f"missing required field '{field}'", field)
    if rule == "anyOf" and all(len(branch.get("required", ())) == 1 for branch in rule_def):
        names = [branch["required"][0] for branch in rule_def]
        if field is None:
            field = names[0]
            return SchemaViolation("missing required field " + " or ".join(f"'{n}'" for n in names), field)
        return SchemaViolation(f"{where} must contain " + " or ".join(f"'{n}'" for n in names), field)
    if rule == "type":
        types = rule_def if isinstance(rule_def, list) else [rule_def]
        message = f"{where} must be " + " or ".join(_TYPE_WORDS.get(t, t) for t in types)
    elif rule == "minLength" and rule_def == 1:
        message = f"{where} must not be empty"
    elif rule == "pattern" and rule_def == NOT_BLANK:
        message = f"{where} must not be blank (only whitespace)"
    elif rule == "minLength":
        message = f"{where} must be at least {rule_def} characters long"
    elif rule == "maxLength":
        message = f"{where} must be at most {rule_def} characters long"
    elif rule == "minimum":
        message = f"{where} must be >= {rule_def}"
    elif rule == "maximum":
        message = f"{where} must be <= {rule_def}"
    else:  # fastjsonschema's own words; they quote the schema, never the value
        text = exc.message.removeprefix("data").lstrip(".")
        message = f"invalid {where}: {text}"
    return SchemaViolation(message, field)


def _normalize_last_seq(validate: Callable[[dict], Any]) -> Callable[[dict], Any]:
    def run(obj: dict) -> None:
        validate(obj)
        content = obj["content"]
        if type(content.get("last_seq")) is float:  # 5.0 passes "integer"; hand the server an int
            content["last_seq"] = int(content["last_seq"])

    return run


def _not_blank_content(validate: Callable[[dict], Any]) -> Callable[[dict], Any]:
    """The published ``pattern: \\S`` of user.message content, checked with ``str.isspace``.

    Same answer (Python's ``\\s`` is exactly ``str.isspace``, checked over every code
    point by the tests), a fraction of the cost: the regex scans leading whitespace at
    ~3.6 ns a character (3.8 ms for a crafted 1 MiB frame), ``isspace`` at ~0.5 ns.
    """

    def run(obj: dict) -> None:
        validate(obj)
        if obj["content"].isspace():  # a non-empty string here: the schema checked type and minLength
            raise SchemaViolation("'content' must not be blank (only whitespace)", "content")

    return run


def _compile(schema: dict) -> Callable[[dict], Any]:
    return fastjsonschema.compile({"$schema": _DRAFT, **schema}, use_default=True)


def _without_not_blank(schema: dict) -> dict:
    content = {k: v for k, v in schema["properties"]["content"].items() if k != "pattern"}
    return {**schema, "properties": {**schema["properties"], "content": content}}


_VALIDATORS: dict[str, Callable[[dict], Any]] = {
    name: _compile(schema) for name, schema in _CLIENT_EVENT_SCHEMAS.items()
}
for _name in (ev.USER_ACK, ev.USER_RECONNECT):
    _VALIDATORS[_name] = _normalize_last_seq(_VALIDATORS[_name])
del _name
_VALIDATORS[ev.USER_MESSAGE] = _not_blank_content(_compile(_without_not_blank(_CLIENT_EVENT_SCHEMAS[ev.USER_MESSAGE])))


def validate_client_frame(obj: dict) -> dict:
    """Check a parsed client frame against the schema; return the same dict.

    Raises :class:`SchemaViolation` (``field`` names the offending field),
    or :class:`UnknownEvent` for an ``event`` string that is no client event.
    Fills in schema defaults in place (``user.reconnect`` ``content.last_seq``
    = 0) and turns integral floats of ``last_seq`` into ints.
    """
    try:
        validate = _VALIDATORS[obj["event"]]
    except (KeyError, TypeError):
        validate = None
    if validate is None:
        _reject_event(obj)
    try:
        validate(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _violation(exc) from None
    return obj


def _reject_event(obj: Any) -> None:
    if not isinstance(obj, dict):
        raise SchemaViolation("a frame must be a JSON object")
    if "event" not in obj:
        raise SchemaViolation("missing required field 'event'", "event")
    name = obj["event"]
    if not isinstance(name, str):
        raise SchemaViolation("'event' must be a string", "event")
    shown = name if len(name) <= 64 else name[:64] + "…"
    raise UnknownEvent(f"unknown event {shown!r}", "event")


def state_token(frame: dict) -> str | dict | None:
    """The signed export carried by a validated ``user.reconnect_with_state`` frame.

    ``content.state`` (canonical) if present, else the legacy top-level
    ``signed_state``.
    """
    content = frame.get("content")
    if isinstance(content, dict) and "state" in content:
        return content["state"]
    return frame.get("signed_state")


_server_validator: Callable[[dict], Any] | None = None


def validate_server_event(obj: dict) -> dict:
    """Check a server -> client envelope against ``SERVER_SCHEMA`` (for tests and clients).

    Raises :class:`SchemaViolation` naming the field. Compiled on first use.
    """
    global _server_validator
    if _server_validator is None:
        _server_validator = fastjsonschema.compile(SERVER_SCHEMA, use_default=False)
    try:
        _server_validator(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _violation(exc) from None
    return obj


def schema_document() -> dict:
    """The published protocol document (``myagent-ws schema``; ``schema.json``)."""
    return {
        "protocol_version": ev.PROTOCOL_VERSION,
        "client": CLIENT_SCHEMA,
        "server": SERVER_SCHEMA,
        "error_codes": {
            code.value: {"recoverable": RECOVERABLE[code], "description": ERROR_DESCRIPTIONS[code]}
            for code in ErrorCode
        },
    }


def schema_json() -> str:
    """:func:`schema_document` as indented JSON text, exactly as in ``schema.json``."""
    return orjson.dumps(schema_document(), option=orjson.OPT_INDENT_2).decode() + "\n"
