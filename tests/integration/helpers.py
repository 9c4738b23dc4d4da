"""Shared helpers of the integration tests: turn invariants, raw sockets, schema checks."""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

import jsonschema
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from myagent.client import TERMINAL, AgentClient, ClientError, ClientSession
from myagent.protocol.schema import SERVER_SCHEMA

_SERVER_VALIDATOR = jsonschema.Draft7Validator(SERVER_SCHEMA)


def assert_valid_server_event(event: dict) -> None:
    """Every server event must validate against the server's own published schema."""
    errors = sorted(_SERVER_VALIDATOR.iter_errors(event), key=lambda e: list(e.path))
    assert not errors, f"{event.get('event')} breaks the published schema: {errors[0].message}\n{event}"


def assert_seqs(events: Iterable[dict], session_id: str, start: int = 1) -> None:
    """Session-scoped events: seq gapless from ``start``, event_id == f"{session_id}:{seq}"."""
    expected = start
    for event in events:
        if "seq" not in event:
            continue
        assert event["session_id"] == session_id, event
        assert event["seq"] == expected, f"expected seq {expected}, got {event['seq']}: {event}"
        assert event["event_id"] == f"{session_id}:{event['seq']}", event
        expected += 1


def assert_turn(events: list[dict], session_id: str, *, terminal: str | None = "agent.final_answer") -> str:
    """Check one turn's events; return its turn_id.

    Exactly one terminal event, last; every event carries the same metadata.turn_id;
    seq strictly +1; tool_call/tool_result paired by step_id; partial deltas add up
    to the final answer.
    """
    assert events, "the turn produced no events"
    terminals = [e for e in events if e["event"] in TERMINAL]
    assert len(terminals) == 1, [e["event"] for e in events]
    assert events[-1] is terminals[0]
    if terminal is not None:
        assert terminals[0]["event"] == terminal, terminals[0]
    turn_ids = {(e.get("metadata") or {}).get("turn_id") for e in events}
    assert len(turn_ids) == 1 and None not in turn_ids, [(e["event"], e["metadata"]) for e in events]
    first = events[0]["seq"]
    assert_seqs(events, session_id, first)
    for event in events:
        assert_valid_server_event(event)
        assert isinstance(event["metadata"], dict)
    calls = {e["step_id"]: e for e in events if e["event"] == "agent.tool_call"}
    results = {e["step_id"]: e for e in events if e["event"] == "agent.tool_result"}
    for step, result in results.items():
        assert step in calls, f"tool_result {step} has no tool_call"
        call = calls[step]
        assert call["seq"] < result["seq"]
        assert call["metadata"]["tool"] == result["metadata"]["tool"]
        assert call["metadata"]["status"] == "running"
        assert "args" in call["metadata"]
        assert result["metadata"]["status"] in ("success", "failed")
    if terminals[0]["event"] == "agent.final_answer":
        deltas = "".join(e["content"] for e in events if e["event"] == "agent.partial_answer")
        assert deltas == terminals[0]["content"], (deltas, terminals[0]["content"])
    return turn_ids.pop()


async def wait_for_event(session: ClientSession, name: str, timeout: float = 10.0) -> tuple[dict, list[dict]]:
    """Read a session's events until one named ``name``; return it and everything read."""
    seen: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await session.next_event(max(0.01, deadline - loop.time()))
        seen.append(event)
        if event["event"] == name:
            return event, seen


async def expect_error(session: ClientSession, code: str, timeout: float = 5.0) -> dict:
    """The next event of the session must be a system.error with ``code`` (no seq: connection-level)."""
    event = await session.next_event(timeout)
    assert event["event"] == "system.error", event
    assert event["metadata"]["error_code"] == code, event
    assert "seq" not in event
    return event


async def no_more_events(session: ClientSession, wait: float = 0.3) -> None:
    try:
        event = await session.next_event(wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected event after the turn ended: {event}")


async def system_event(client: AgentClient, timeout: float = 5.0) -> dict:
    """The next connection-level event of the client (heartbeats skipped)."""
    while True:
        event = await asyncio.wait_for(client.system.get(), timeout)
        if event["event"] != "system.heartbeat":
            return event


async def system_error(client: AgentClient, code: str, timeout: float = 5.0) -> dict:
    """The next connection-level event of the client must be a system.error with ``code``."""
    event = await system_event(client, timeout)
    assert event["event"] == "system.error", event
    assert event["metadata"]["error_code"] == code, event
    return event


async def system_notice(client: AgentClient, key: str, timeout: float = 10.0) -> dict:
    """The next connection-level system.notice whose metadata has ``key`` (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await asyncio.wait_for(client.system.get(), max(0.01, deadline - loop.time()))
        if event.get("event") == "system.notice" and (event.get("metadata") or {}).get(key):
            return event


async def create_fails(client: AgentClient, code: str) -> ClientError:
    try:
        await client.create_session()
    except ClientError as exc:
        assert exc.code == code, exc.event
        return exc
    raise AssertionError(f"create_session succeeded; expected {code}")


# Raw WebSocket ----------------------------------------------------------------------


async def raw_connect(url: str, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("max_size", 16 * 1024 * 1024)
    kwargs.setdefault("compression", None)
    ws = await connect(url, open_timeout=5, **kwargs)
    hello = await recv_json(ws)
    assert hello["event"] == "system.connected", hello
    return ws


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict:
    """Next event on a raw connection, heartbeats skipped."""
    while True:
        data = await asyncio.wait_for(ws.recv(), timeout)
        event = orjson.loads(data)
        if event.get("event") != "system.heartbeat":
            return event


async def send_json(ws: ClientConnection, frame: Any) -> None:
    await ws.send(orjson.dumps(frame).decode())


async def raw_create_session(ws: ClientConnection) -> dict:
    await send_json(ws, {"event": "user.create_session"})
    event = await recv_json(ws)
    assert event["event"] == "agent.session_created", event
    return event


async def raw_turn(ws: ClientConnection, session_id: str, text: str = "hello", timeout: float = 10.0) -> list[dict]:
    """Send a message on a raw connection and read through its terminal event."""
    await send_json(ws, {"event": "user.message", "session_id": session_id, "content": text})
    events = []
    while True:
        event = await recv_json(ws, timeout)
        events.append(event)
        assert event["event"] != "system.error", event
        if event["event"] in TERMINAL:
            return events


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Wait until the server closes the connection; return the close code it sent."""
    async def drain() -> None:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass

    await asyncio.wait_for(drain(), timeout)
    return ws.close_code
