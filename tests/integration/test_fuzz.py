"""Property-based fuzzing of a live server (hypothesis): valid frames from the published
schema, broken frames, arbitrary JSON and arbitrary text and bytes.

Every reply must validate against the server's own published schema (both our
compiled validator and the independent ``jsonschema`` library); the server must
never crash, hang or stop answering; afterwards it is healthy and serves a turn.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from myagent.client import AgentClient
from myagent.protocol.schema import SERVER_SCHEMA, validate_server_event
from tests.protocol.strategies import client_frames, invalid_client_frames, json_values
from tests.serverproc import AGENTS, SCRIPTS, ServerProcess

_sentinels = itertools.count()
INDEPENDENT = jsonschema.Draft7Validator(SERVER_SCHEMA)


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess(AGENTS / "test_agent.py", "--workers", "1", "--rate-limit", "0",
                        "--max-message-size", "64KiB", "--confirm-timeout", "1",
                        llm=f"scripted:{SCRIPTS / 'test_script.json'}").start()
    yield srv
    srv.stop()


class Peer:
    """One raw connection with a live session; reconnects if the server closed it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws = None
        self.sid = ""
        self.replies = 0

    async def ensure(self) -> None:
        if self.ws is not None and self.ws.close_code is None:
            return
        self.ws = await connect(self.url, max_size=2**24, open_timeout=10)
        self.check(orjson.loads(await self.ws.recv()))
        await self.ws.send('{"event":"user.create_session"}')
        created = orjson.loads(await self.ws.recv())
        self.check(created)
        self.sid = created["session_id"]

    def check(self, event: dict) -> None:
        validate_server_event(event)
        errors = sorted(INDEPENDENT.iter_errors(event), key=str)
        assert not errors, f"{event}: {errors[0].message}"
        self.replies += 1

    async def exchange(self, payload: str | bytes) -> None:
        """Send one frame, then a sentinel; validate every reply up to the sentinel's answer."""
        await self.ensure()
        marker = f"sentinel-{next(_sentinels)}"
        try:
            await self.ws.send(payload)
            await self.ws.send(orjson.dumps({"event": "user.cancel", "session_id": marker}).decode())
            while True:
                event = orjson.loads(await asyncio.wait_for(self.ws.recv(), 10))
                self.check(event)
                if (event.get("metadata") or {}).get("session_id") == marker:
                    return
        except ConnectionClosed:
            assert self.ws.close_code in (1009, 1007, 1008), self.ws.close_code  # size, UTF-8, policy


def with_session(frame: dict, peer: Peer, use_live: bool) -> dict:
    if use_live and "session_id" in frame:
        frame = {**frame, "session_id": peer.sid}
    return frame


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def peer(server):
    return Peer(server.url)


def run(coro):
    return asyncio.run(coro)


@FUZZ
@given(frame=client_frames(), live=st.booleans())
def test_valid_frames(server, peer, frame, live):
    run(_exchange_fresh(peer, json.dumps(with_session(frame, peer, live))))


@FUZZ
@given(case=invalid_client_frames())
def test_broken_frames(server, peer, case):
    frame, _field = case
    run(_exchange_fresh(peer, json.dumps(frame)))  # stdlib: encodes out-of-range ints too


@FUZZ
@given(value=json_values(max_leaves=20))
def test_arbitrary_json(server, peer, value):
    run(_exchange_fresh(peer, json.dumps(value)))


@FUZZ
@given(data=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_text_and_bytes(server, peer, data):
    run(_exchange_fresh(peer, data))


async def _exchange_fresh(peer: Peer, payload: str | bytes) -> None:
    # Each asyncio.run has its own loop: reconnect inside it.
    peer.ws = None
    try:
        await peer.exchange(payload)
    finally:
        if peer.ws is not None:
            await peer.ws.close()


def test_server_is_healthy_after_fuzzing(server, peer):
    assert peer.replies > 100
    assert server.get("/ready")[0] == 200
    status = server.status()
    assert status["restarts"]["total"] == 0, "no input may crash a sandbox"

    async def turn() -> None:
        async with await AgentClient.connect(server.url) as client:
            final, _ = await (await client.create_session()).ask("what's the weather")
            assert final["event"] == "agent.final_answer" and "sunny" in final["content"]

    run(turn())
