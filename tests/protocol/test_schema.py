import copy
from pathlib import Path

import fastjsonschema
import jsonschema
import orjson
import pytest
from hypothesis import given, settings

from myagent.protocol import events as ev
from myagent.protocol.envelope import iso_utc, make_event
from myagent.protocol.errors import ErrorCode
from myagent.protocol.exceptions import SchemaViolation, UnknownEvent
from myagent.protocol.schema import (
    CLIENT_SCHEMA,
    SERVER_SCHEMA,
    schema_document,
    schema_json,
    state_token,
    validate_client_frame,
    validate_server_event,
)
from myagent.protocol.wirejson import parse_client_frame

from .strategies import client_frames, invalid_client_frames

CLIENT_CHECK = jsonschema.Draft7Validator(CLIENT_SCHEMA)
SERVER_CHECK = jsonschema.Draft7Validator(SERVER_SCHEMA)

SID = "3f6c2a5e-0000-4000-8000-000000000001"

VALID = {
    ev.USER_CREATE_SESSION: [
        {"event": "user.create_session"},
        {"event": "user.create_session", "content": {"agent": "x"}},
        {"event": "user.create_session", "content": "create_session", "timestamp": "2025-01-01T00:00:00"},
        {"event": "user.create_session", "content": None},
    ],
    ev.USER_MESSAGE: [
        {"event": "user.message", "session_id": SID, "content": "hi"},
        {"event": "user.message", "session_id": SID, "content": "hi", "metadata": {"message_id": "m1", "x": 1}},
        {"event": "user.message", "session_id": SID, "content": " x ", "timestamp": "t", "whatever": [1]},
        {"event": "user.message", "session_id": SID, "content": "\u200b"},  # zero-width space: not whitespace
    ],
    ev.USER_CANCEL: [{"event": "user.cancel", "session_id": SID}],
    ev.USER_RESPONSE: [
        {"event": "user.response", "session_id": SID, "step_id": "s1", "content": {"confirmed": True}},
        {"event": "user.response", "session_id": SID, "step_id": "s1", "content": {"approved": False}},
    ],
    ev.USER_ACK: [
        {"event": "user.ack", "session_id": SID, "content": {"last_seq": 0}},
        {"event": "user.ack", "content": {"last_event_id": f"{SID}:12"}},  # original console: no session_id
    ],
    ev.USER_RECONNECT: [
        {"event": "user.reconnect", "session_id": SID, "content": {"resume_token": "tok", "last_seq": 5}},
        {"event": "user.reconnect", "session_id": SID, "content": {"resume_token": "tok"}},
    ],
    ev.USER_CLOSE_SESSION: [{"event": "user.close_session", "session_id": SID}],
    ev.USER_REQUEST_STATE: [{"event": "user.request_state", "session_id": SID, "metadata": {}}],
    ev.USER_RECONNECT_WITH_STATE: [
        {"event": "user.reconnect_with_state", "content": {"state": "tok.sig"}},
        {"event": "user.reconnect_with_state", "signed_state": {"state": {}, "signature": "ab"}},
    ],
}

# (frame, field the error must name)
INVALID = {
    ev.USER_CREATE_SESSION: [({"event": "user.create_session", "content": 5}, "content")],
    ev.USER_MESSAGE: [
        ({"event": "user.message", "content": "hi"}, "session_id"),
        ({"event": "user.message", "session_id": SID}, "content"),
        ({"event": "user.message", "session_id": SID, "content": ""}, "content"),
        ({"event": "user.message", "session_id": SID, "content": " "}, "content"),
        ({"event": "user.message", "session_id": SID, "content": " \n\t\r\u00a0\u3000"}, "content"),
        ({"event": "user.message", "session_id": SID, "content": {"text": "hi"}}, "content"),
        ({"event": "user.message", "session_id": SID, "content": None}, "content"),
        ({"event": "user.message", "session_id": 42, "content": "hi"}, "session_id"),
        ({"event": "user.message", "session_id": "", "content": "hi"}, "session_id"),
        ({"event": "user.message", "session_id": "s" * 129, "content": "hi"}, "session_id"),
        ({"event": "user.message", "session_id": SID, "content": "hi", "metadata": []}, "metadata"),
        ({"event": "user.message", "session_id": SID, "content": "hi", "metadata": {"message_id": 1}},
         "metadata.message_id"),
    ],
    ev.USER_CANCEL: [
        ({"event": "user.cancel"}, "session_id"),
        ({"event": "user.cancel", "session_id": None}, "session_id"),
    ],
    ev.USER_RESPONSE: [
        ({"event": "user.response", "session_id": SID, "content": {"confirmed": True}}, "step_id"),
        ({"event": "user.response", "session_id": SID, "step_id": "s1"}, "content"),
        ({"event": "user.response", "session_id": SID, "step_id": "s1", "content": {}}, "content"),
        ({"event": "user.response", "session_id": SID, "step_id": "s1", "content": True}, "content"),
        ({"event": "user.response", "session_id": SID, "step_id": "s1", "content": {"confirmed": "yes"}},
         "content.confirmed"),
        ({"event": "user.response", "session_id": SID, "step_id": "s1", "content": {"approved": 1}},
         "content.approved"),
    ],
    ev.USER_ACK: [
        ({"event": "user.ack"}, "content"),
        ({"event": "user.ack", "content": {}}, "content"),
        ({"event": "user.ack", "content": {"last_seq": -1}}, "content.last_seq"),
        ({"event": "user.ack", "content": {"last_seq": "3"}}, "content.last_seq"),
        ({"event": "user.ack", "content": {"last_seq": True}}, "content.last_seq"),
        ({"event": "user.ack", "content": {"last_seq": 1.5}}, "content.last_seq"),
        ({"event": "user.ack", "content": {"last_event_id": ""}}, "content.last_event_id"),
    ],
    ev.USER_RECONNECT: [
        ({"event": "user.reconnect", "content": {"resume_token": "t"}}, "session_id"),
        ({"event": "user.reconnect", "session_id": SID}, "content"),
        ({"event": "user.reconnect", "session_id": SID, "content": {}}, "content.resume_token"),
        ({"event": "user.reconnect", "session_id": SID, "content": {"resume_token": 1}}, "content.resume_token"),
        ({"event": "user.reconnect", "session_id": SID, "content": {"resume_token": "t", "last_seq": -2}},
         "content.last_seq"),
    ],
    ev.USER_CLOSE_SESSION: [({"event": "user.close_session", "session_id": ["x"]}, "session_id")],
    ev.USER_REQUEST_STATE: [({"event": "user.request_state"}, "session_id")],
    ev.USER_RECONNECT_WITH_STATE: [
        ({"event": "user.reconnect_with_state"}, "content"),
        ({"event": "user.reconnect_with_state", "content": {}}, "content.state"),
        ({"event": "user.reconnect_with_state", "content": {"state": 5}}, "content.state"),
        ({"event": "user.reconnect_with_state", "content": {"state": ""}}, "content.state"),
        ({"event": "user.reconnect_with_state", "signed_state": 5}, "signed_state"),
    ],
}


def test_examples_cover_every_client_event():
    assert set(VALID) == set(INVALID) == ev.CLIENT_EVENTS


@pytest.mark.parametrize("frame", [f for frames in VALID.values() for f in frames], ids=lambda f: f["event"])
def test_valid_examples(frame):
    original = copy.deepcopy(frame)
    assert validate_client_frame(frame) is frame
    CLIENT_CHECK.validate(original)  # the published schema agrees


@pytest.mark.parametrize(
    ("frame", "field"), [case for cases in INVALID.values() for case in cases], ids=lambda x: str(x)[:60]
)
def test_invalid_examples_name_the_field(frame, field):
    with pytest.raises(SchemaViolation) as info:
        validate_client_frame(copy.deepcopy(frame))
    exc = info.value
    assert exc.code == ErrorCode.SCHEMA_VIOLATION
    assert exc.field == field
    assert field in exc.message
    assert not CLIENT_CHECK.is_valid(frame)  # the published schema agrees


def test_blank_check_is_the_published_pattern_on_every_code_point():
    """The server checks ``str.isspace`` (fast); the published schema says ``pattern: \\S``."""
    import re

    pattern = re.compile(CLIENT_SCHEMA["definitions"]["user.message"]["properties"]["content"]["pattern"])
    disagree = [hex(cp) for cp in range(0x110000)
                if not 0xD800 <= cp <= 0xDFFF and (pattern.search(chr(cp)) is None) != chr(cp).isspace()]
    assert disagree == []
    for content in (" \u3000\n", "\u2028", " x", "\ufeff"):
        frame = {"event": "user.message", "session_id": SID, "content": content}
        try:
            validate_client_frame(dict(frame))
            server_ok = True
        except SchemaViolation:
            server_ok = False
        assert server_ok is CLIENT_CHECK.is_valid(frame), content


def test_blank_message_error_says_what_is_wrong():
    with pytest.raises(SchemaViolation) as info:
        validate_client_frame({"event": "user.message", "session_id": SID, "content": "  \n "})
    assert info.value.message == "'content' must not be blank (only whitespace)"
    with pytest.raises(SchemaViolation) as info:  # empty keeps its own words
        validate_client_frame({"event": "user.message", "session_id": SID, "content": ""})
    assert info.value.message == "'content' must not be empty"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({}, "missing required field 'event'"),
        ({"content": "hi"}, "missing required field 'event'"),
        ({"event": 5}, "'event' must be a string"),
        ({"event": None}, "'event' must be a string"),
        ({"event": ["user.message"]}, "'event' must be a string"),
        ({"event": {"a": 1}}, "'event' must be a string"),
    ],
)
def test_event_field_problems(frame, message):
    with pytest.raises(SchemaViolation) as info:
        validate_client_frame(frame)
    assert info.value.field == "event"
    assert info.value.message == message


@pytest.mark.parametrize("name", ["user.nope", "agent.final_answer", "USER.MESSAGE", "", "x" * 10_000])
def test_unknown_event(name):
    with pytest.raises(UnknownEvent) as info:
        validate_client_frame({"event": name, "session_id": SID})
    exc = info.value
    assert exc.code == ErrorCode.UNKNOWN_EVENT and exc.field == "event"
    assert repr(name[:64]) [1:-1] in exc.message
    assert len(exc.message) < 100


def test_not_a_dict():
    with pytest.raises(SchemaViolation):
        validate_client_frame([])  # type: ignore[arg-type]


def test_reconnect_gets_default_last_seq():
    frame = validate_client_frame({"event": "user.reconnect", "session_id": SID, "content": {"resume_token": "t"}})
    assert frame["content"]["last_seq"] == 0


@pytest.mark.parametrize("event", [ev.USER_ACK, ev.USER_RECONNECT])
def test_integral_float_last_seq_becomes_int(event):
    frame = {"event": event, "session_id": SID, "content": {"resume_token": "t", "last_seq": 7.0}}
    assert type(validate_client_frame(frame)["content"]["last_seq"]) is int


def test_state_token():
    assert state_token({"event": "user.reconnect_with_state", "content": {"state": "a"}}) == "a"
    assert state_token({"event": "user.reconnect_with_state", "signed_state": {"k": 1}}) == {"k": 1}
    assert state_token({"event": "user.reconnect_with_state"}) is None


# -- generated frames (the strategies the server fuzz tests reuse) -------------------


@settings(max_examples=500, deadline=None)
@given(client_frames())
def test_generated_frames_are_valid(frame):
    CLIENT_CHECK.validate(frame)
    wire = orjson.dumps(frame)
    parsed = parse_client_frame(wire)
    assert parsed == frame
    assert validate_client_frame(parsed) is parsed


@settings(max_examples=500, deadline=None)
@given(invalid_client_frames())
def test_generated_invalid_frames_name_their_field(case):
    frame, field = case
    assert not CLIENT_CHECK.is_valid(frame)
    with pytest.raises(SchemaViolation) as info:
        validate_client_frame(frame)
    assert info.value.field == field


# -- server schema ---------------------------------------------------------------------

T = iso_utc(1_764_088_345.123)
TURN = {"turn_id": "t1"}


def server_examples() -> list[dict]:
    s = {"session_id": SID, "timestamp": T}
    err = {"error_code": ErrorCode.SESSION_BUSY.value, "recoverable": True}
    usage = {"prompt_tokens": 120, "completion_tokens": 8, "total_tokens": 128, "llm_requests": 1,
             "unknown_requests": 0, "llm_ms": 512.5, "tool_ms": 0.0, "model": "gpt-4o-mini"}
    totals = {**{k: v for k, v in usage.items() if k != "model"}, "turns": 1, "unknown_turns": 0}
    return [
        make_event(ev.SYSTEM_CONNECTED, timestamp=T, content={"protocol_version": "1"},
                   metadata={"connection_id": "c1"}),
        make_event(ev.SYSTEM_HEARTBEAT, timestamp=T),
        make_event(ev.SYSTEM_NOTICE, timestamp=T, content="sandbox restarted"),
        make_event(ev.SYSTEM_ERROR, timestamp=T, content="not JSON",
                   metadata={"error_code": "INVALID_JSON", "recoverable": True, "field": None}),
        make_event(ev.AGENT_SESSION_CREATED, seq=1, content={"session_id": SID},
                   metadata={"resume_token": "rt", "agent_name": "weather", "tools": [], "usage": totals}, **s),
        make_event(ev.AGENT_THINKING, seq=2, content="hmm", metadata=TURN, **s),
        make_event(ev.AGENT_TOOL_CALL, seq=3, step_id="st1", content="Calling tool: get_weather",
                   metadata={**TURN, "tool": "get_weather", "args": {"city": "Paris"}, "status": "running"}, **s),
        make_event(ev.AGENT_TOOL_RESULT, seq=4, step_id="st1", content="sunny",
                   metadata={**TURN, "tool": "get_weather", "status": "success", "error": None}, **s),
        make_event(ev.AGENT_USER_CONFIRM, seq=5, step_id="st2", content="Run it?",
                   metadata={**TURN, "tool_name": "rm", "tool_args": {}, "tool_description": "Removes"}, **s),
        make_event(ev.AGENT_PARTIAL_ANSWER, seq=6, content="It is", metadata=TURN, **s),
        make_event(ev.AGENT_FINAL_ANSWER, seq=7, content="It is sunny.", metadata={**TURN, "usage": usage}, **s),
        make_event(ev.AGENT_ERROR, seq=8, content="busy", metadata=err, **s),
        make_event(ev.AGENT_ERROR, content="no such session", timestamp=T,
                   metadata={"error_code": "SESSION_NOT_FOUND", "recoverable": False}),
        make_event(ev.AGENT_INTERRUPTED, seq=9, content="sandbox crashed",
                   metadata={**TURN, "reason": "SANDBOX_CRASHED", "usage": None}, **s),
        make_event(ev.AGENT_SESSION_END, seq=10, **s),
        make_event(ev.AGENT_SESSION_RESUMED, seq=11, metadata={"replayed": 3, "usage": totals}, **s),
        make_event(ev.AGENT_STATE_EXPORTED, content={"state": "tok"}, metadata={"signed_state": "tok"}, **s),
        make_event(ev.AGENT_STATE_RESTORED, seq=1, **s),
        make_event(ev.AGENT_MESSAGE_QUEUED, seq=12, content="queued",
                   metadata={"turn_id": "t_2", "position": 1, "multitask": "enqueue"}, **s),
    ]


def test_server_examples_cover_every_server_event():
    assert {e["event"] for e in server_examples()} == ev.SERVER_EVENTS


@pytest.mark.parametrize("event", server_examples(), ids=lambda e: e["event"])
def test_server_examples_are_valid(event):
    event = orjson.loads(orjson.dumps(event))
    SERVER_CHECK.validate(event)
    assert validate_server_event(event) is event


def _broken(event_name: str, change) -> dict:
    event = next(e for e in server_examples() if e["event"] == event_name)
    event = copy.deepcopy(event)
    change(event)
    return event


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_broken(ev.AGENT_THINKING, lambda e: e.update(event="agent.nope")), "event"),
        (_broken(ev.AGENT_THINKING, lambda e: e.update(timestamp="2025-11-25T16:32:25Z")), "timestamp"),
        (_broken(ev.AGENT_THINKING, lambda e: e.pop("metadata")), "metadata"),
        (_broken(ev.AGENT_THINKING, lambda e: e.update(metadata=[])), "metadata"),
        (_broken(ev.AGENT_THINKING, lambda e: e.update(seq=0)), "seq"),
        (_broken(ev.AGENT_THINKING, lambda e: e.pop("seq")), None),  # event_id without seq
        (_broken(ev.AGENT_THINKING, lambda e: e["metadata"].pop("turn_id")), "metadata.turn_id"),
        (_broken(ev.AGENT_FINAL_ANSWER, lambda e: e.update(content={"text": "x"})), "content"),
        (_broken(ev.AGENT_TOOL_CALL, lambda e: e.pop("step_id")), "step_id"),
        (_broken(ev.AGENT_TOOL_RESULT, lambda e: e["metadata"].update(status="ok")), "metadata.status"),
        (_broken(ev.SYSTEM_ERROR, lambda e: e["metadata"].update(error_code="OOPS")), "metadata.error_code"),
        (_broken(ev.SYSTEM_ERROR, lambda e: e["metadata"].pop("recoverable")), "metadata.recoverable"),
        (_broken(ev.SYSTEM_CONNECTED, lambda e: e["metadata"].pop("connection_id")), "metadata.connection_id"),
        (_broken(ev.AGENT_SESSION_CREATED, lambda e: e["metadata"].pop("agent_name")), "metadata.agent_name"),
        (_broken(ev.AGENT_USER_CONFIRM, lambda e: e["metadata"].pop("tool_name")), "metadata.tool_name"),
        # the original MyAgent clients read the export from metadata.signed_state
        (_broken(ev.AGENT_STATE_EXPORTED, lambda e: e["metadata"].pop("signed_state")), "metadata.signed_state"),
    ],
    ids=lambda x: str(x)[:50],
)
def test_broken_server_events_are_rejected(event, field):
    assert not SERVER_CHECK.is_valid(event)
    with pytest.raises(SchemaViolation) as info:
        validate_server_event(event)
    if field is not None:
        assert info.value.field == field


# -- the published document -------------------------------------------------------------


def test_schemas_are_valid_draft7_and_compile():
    for schema in (CLIENT_SCHEMA, SERVER_SCHEMA):
        jsonschema.Draft7Validator.check_schema(schema)
        fastjsonschema.compile(schema)


def test_combined_client_schema_agrees_with_the_per_event_validators():
    whole = fastjsonschema.compile(CLIENT_SCHEMA)
    for frames in VALID.values():
        for frame in frames:
            whole(copy.deepcopy(frame))
    for cases in INVALID.values():
        for frame, _field in cases:
            with pytest.raises(fastjsonschema.JsonSchemaValueException):
                whole(copy.deepcopy(frame))


def test_schema_document():
    doc = schema_document()
    assert doc["client"] is CLIENT_SCHEMA and doc["server"] is SERVER_SCHEMA
    assert doc["protocol_version"] == ev.PROTOCOL_VERSION
    assert set(doc["error_codes"]) == {c.value for c in ErrorCode}


def test_schema_json_file_is_up_to_date():
    path = Path(__file__).parents[2] / "myagent" / "protocol" / "schema.json"
    on_disk = path.read_text(encoding="utf-8")
    assert orjson.loads(on_disk) == orjson.loads(orjson.dumps(schema_document()))
    assert on_disk == schema_json(), "regenerate: python -m myagent.protocol > myagent/protocol/schema.json"


def test_python_m_myagent_protocol_prints_the_document():
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "myagent.protocol"], cwd=root, capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout == schema_json()
    assert out.stderr == ""
