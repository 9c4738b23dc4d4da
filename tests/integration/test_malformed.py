"""Malformed input: every bad frame gets a clear answer and the connection keeps working.

The module's server has small limits: --max-message-size 64KiB (a bigger frame
closes the connection with 1009) and --max-user-message-chars 100
(MESSAGE_TOO_LARGE).
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from .helpers import (
    assert_valid_server_event,
    closed_with,
    raw_connect,
    raw_create_session,
    raw_turn,
    recv_json,
    send_json,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MAX_MESSAGE_SIZE = 64 * 1024
MAX_CHARS = 100


@pytest.fixture(scope="module")
def server_args():
    return ("--workers", "2", "--max-message-size", "64KiB", "--max-user-message-chars", str(MAX_CHARS))


@pytest.fixture
async def ws(server):
    conn = await raw_connect(server.url)
    yield conn
    await conn.close()


async def _error(ws, code: str) -> dict:
    event = await recv_json(ws)
    assert event["event"] == "system.error", event
    assert_valid_server_event(event)
    assert event["metadata"]["error_code"] == code, event
    assert event["metadata"]["recoverable"] is True
    assert "Traceback" not in str(event["content"])
    assert "seq" not in event
    return event


async def _still_works(ws, sid: str) -> None:
    events = await raw_turn(ws, sid, "are you there")
    assert events[-1]["event"] == "agent.final_answer", events[-1]
    assert "are you there" in events[-1]["content"]


@pytest.mark.parametrize("text, code", [
    ("this is not json", "INVALID_JSON"),
    ("{\"event\": \"user.message\", ", "INVALID_JSON"),
    ("", "INVALID_JSON"),
    ("[1, 2, 3]", "INVALID_JSON"),
    ("[{\"event\": \"user.create_session\"}]", "INVALID_JSON"),
    ("\"user.create_session\"", "INVALID_JSON"),
    ("null", "INVALID_JSON"),
    ("{\"session_id\": \"s_x\", \"content\": \"hi\"}", "SCHEMA_VIOLATION"),
    ("{\"event\": 42}", "SCHEMA_VIOLATION"),
    ("{\"event\": \"user.dance\"}", "UNKNOWN_EVENT"),
    ("{\"event\": \"agent.final_answer\", \"content\": \"x\"}", "UNKNOWN_EVENT"),
])
async def test_bad_text_frame(ws, text, code):
    created = await raw_create_session(ws)
    await ws.send(text)
    err = await _error(ws, code)
    if code == "UNKNOWN_EVENT":
        name = orjson.loads(text)["event"]
        assert name in err["content"], err
        assert err["metadata"].get("field") == "event"
    if text.startswith("{\"session_id\""):
        assert err["metadata"]["field"] == "event"
    await _still_works(ws, created["session_id"])


@pytest.mark.parametrize("content", ["", 42, None, ["hi"], {"text": "hi"}, True])
async def test_message_content_must_be_a_non_empty_string(ws, content):
    created = await raw_create_session(ws)
    await send_json(ws, {"event": "user.message", "session_id": created["session_id"], "content": content})
    err = await _error(ws, "SCHEMA_VIOLATION")
    assert err["metadata"]["field"] == "content", err
    assert err["metadata"]["request_event"] == "user.message"
    await _still_works(ws, created["session_id"])


@pytest.mark.parametrize("content", [" ", " \n\t\r ", "\u00a0\u3000\u2003"])
async def test_blank_message_is_refused_before_any_turn_starts(server, ws, content):
    created = await raw_create_session(ws)
    sid = created["session_id"]
    turns_before = server.status()["totals"]["turns_started"]
    await send_json(ws, {"event": "user.message", "session_id": sid, "content": content})
    err = await _error(ws, "SCHEMA_VIOLATION")
    assert err["metadata"]["field"] == "content" and err["metadata"]["request_event"] == "user.message"
    assert err["content"] == "'content' must not be blank (only whitespace)", err
    assert server.status()["totals"]["turns_started"] == turns_before  # no turn, no sandbox work
    events = await raw_turn(ws, sid, "hi")  # and the blank one is not in the history
    assert events[-1]["content"] == "You said: hi. Before that: . Turn 1.", events[-1]


async def test_message_without_content_names_the_field(ws):
    created = await raw_create_session(ws)
    await send_json(ws, {"event": "user.message", "session_id": created["session_id"]})
    err = await _error(ws, "SCHEMA_VIOLATION")
    assert err["metadata"]["field"] == "content"
    await send_json(ws, {"event": "user.message", "content": "hi"})
    err = await _error(ws, "SCHEMA_VIOLATION")
    assert err["metadata"]["field"] == "session_id"
    await send_json(ws, {"event": "user.response", "session_id": created["session_id"], "step_id": "x",
                         "content": {"confirmed": "yes"}})
    err = await _error(ws, "SCHEMA_VIOLATION")
    assert err["metadata"]["field"] == "content.confirmed"
    await _still_works(ws, created["session_id"])


async def test_binary_frame_is_unsupported(ws):
    created = await raw_create_session(ws)
    await ws.send(orjson.dumps({"event": "user.message", "session_id": created["session_id"], "content": "hi"}))
    await _error(ws, "UNSUPPORTED_FRAME")
    await _still_works(ws, created["session_id"])


async def test_extra_top_level_fields_are_accepted(ws):
    await send_json(ws, {"event": "user.create_session", "timestamp": "2024-05-01T12:00:00.000Z",
                         "metadata": {"client": "seed-js"}, "whatever": [1, 2]})
    created = await recv_json(ws)
    assert created["event"] == "agent.session_created", created
    sid = created["session_id"]
    await send_json(ws, {"event": "user.message", "session_id": sid, "content": "with extras",
                         "timestamp": "2024-05-01T12:00:01.000Z", "metadata": {"client": "seed-js", "n": 1},
                         "extra": {"deep": True}})
    events = []
    while not events or events[-1]["event"] != "agent.final_answer":
        events.append(await recv_json(ws))
        assert events[-1]["event"] != "system.error", events[-1]
    assert "with extras" in events[-1]["content"]


async def test_user_message_longer_than_the_limit_is_message_too_large(ws):
    created = await raw_create_session(ws)
    sid = created["session_id"]
    await send_json(ws, {"event": "user.message", "session_id": sid, "content": "x" * (MAX_CHARS + 1)})
    err = await _error(ws, "MESSAGE_TOO_LARGE")
    assert err["metadata"]["field"] == "content"
    # Exactly at the limit is fine (characters, not bytes: 100 multi-byte characters too).
    events = await raw_turn(ws, sid, "é" * MAX_CHARS)
    assert events[-1]["event"] == "agent.final_answer"


async def test_frame_over_max_message_size_closes_1009_and_spares_others(server):
    victim = await raw_connect(server.url)
    bystander = await raw_connect(server.url)
    try:
        created = await raw_create_session(bystander)
        big = {"event": "user.message", "session_id": "s_x", "content": "y" * (MAX_MESSAGE_SIZE + 10)}
        await send_json(victim, big)
        assert await closed_with(victim) == 1009
        await _still_works(bystander, created["session_id"])
        # The server still accepts new connections.
        fresh = await raw_connect(server.url)
        await fresh.close()
    finally:
        await victim.close()
        await bystander.close()


async def test_frame_just_under_max_message_size_is_processed(ws):
    created = await raw_create_session(ws)
    # Fits the frame limit, breaks the character limit: answered, not closed.
    await send_json(ws, {"event": "user.message", "session_id": created["session_id"],
                         "content": "z" * (MAX_MESSAGE_SIZE - 200)})
    await _error(ws, "MESSAGE_TOO_LARGE")
    await _still_works(ws, created["session_id"])


async def test_invalid_utf8_text_frame_closes_1007(server):
    ws = await raw_connect(server.url)
    bystander = await raw_connect(server.url)
    try:
        created = await raw_create_session(bystander)
        # websockets sends bytes with text=True as a text frame without checking them.
        await ws.send(b'{"event": "user.create_session", "x": "\xff\xfe"}', text=True)
        assert await closed_with(ws) == 1007
        await _still_works(bystander, created["session_id"])
    finally:
        await ws.close()
        await bystander.close()


async def test_a_burst_of_garbage_then_a_valid_request(ws):
    created = await raw_create_session(ws)
    for i in range(30):  # within the rate limiter's burst (40)
        await ws.send(f"garbage {i}")
    codes = [(await recv_json(ws))["metadata"]["error_code"] for _ in range(30)]
    assert codes == ["INVALID_JSON"] * 30
    await _still_works(ws, created["session_id"])


async def test_a_flood_is_rate_limited_and_the_connection_survives(ws):
    created = await raw_create_session(ws)
    for i in range(55):
        await ws.send(f"flood {i}")
    codes = [(await recv_json(ws))["metadata"]["error_code"] for _ in range(55)]
    assert set(codes) == {"INVALID_JSON", "RATE_LIMITED"}, codes
    assert codes[:30] == ["INVALID_JSON"] * 30
    await asyncio.sleep(0.5)  # the bucket refills
    await _still_works(ws, created["session_id"])


async def test_deeply_nested_json_is_rejected(ws):
    created = await raw_create_session(ws)
    await ws.send('{"event": "user.create_session", "content": {"a": ' + "[" * 5000 + "]" * 5000 + "}}")
    await _error(ws, "INVALID_JSON")
    await _still_works(ws, created["session_id"])
