"""myagent/client/resume.py against a fake server in this process: what ends a resume, and when.

The fake speaks just enough of the protocol (system.connected, session_created,
then a refusal or nothing); the real server's resumes are in
tests/integration/test_chat_cli.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.server import serve

from myagent.client.backoff import Backoff
from myagent.client.resume import ResumingSession, SessionLost


class FakeServer:
    """Creates one session, then closes every connection; a reconnect is refused with ``refusal``."""

    def __init__(self, refusal: str = "SESSION_NOT_FOUND", recoverable: bool = False) -> None:
        self.refusal, self.recoverable = refusal, recoverable
        self.reconnects = 0
        self.server = None

    async def handler(self, ws) -> None:
        await ws.send(json.dumps({"event": "system.connected", "metadata": {"connection_id": "c_1"}}))
        frame = json.loads(await ws.recv())
        if frame["event"] == "user.create_session":
            await ws.send(json.dumps({"event": "agent.session_created", "session_id": "s_1", "seq": 1,
                                      "metadata": {"resume_token": "t", "agent_name": "fake"}}))
            await ws.close(1001, "going away")
            return
        self.reconnects += 1
        await ws.send(json.dumps({"event": "system.error", "content": "No such session.",
                                  "metadata": {"error_code": self.refusal, "recoverable": self.recoverable,
                                               "request_event": "user.reconnect", "session_id": "s_1"}}))
        await ws.wait_closed()

    async def __aenter__(self) -> str:
        self.server = await serve(self.handler, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_an_expired_session_stops_at_the_first_refusal_and_says_why():
    notes: list[str] = []
    async with FakeServer() as url:
        link = ResumingSession(url, None, lambda text, style: notes.append(text), Backoff(jitter=0.0))
        await link.open()
        with pytest.raises(SessionLost, match=r"s_1 could not be resumed \(SESSION_NOT_FOUND\)"):
            await asyncio.wait_for(link.next_event(), 10)
        await link.close()
    assert notes[0].startswith("reconnecting…") and "could not be resumed" in notes[-1]
    with pytest.raises(SessionLost):  # said once, raised to every later caller
        await link.resumed()


async def test_a_recoverable_refusal_is_retried_then_given_up_within_the_budget():
    notes: list[str] = []
    fake = FakeServer(refusal="SERVER_BUSY", recoverable=True)
    async with fake as url:
        link = ResumingSession(url, None, lambda text, style: notes.append(text),
                               Backoff(first=0.05, max_delay=0.1, give_up_after=0.5, jitter=0.0))
        await link.open()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(SessionLost, match=r"could not reconnect within 0.5 s"):
            await asyncio.wait_for(link.next_event(), 10)
        took = loop.time() - started
        await link.close()
    assert fake.reconnects >= 3  # retried with backoff ...
    assert took < 2.0            # ... and stopped at the budget, not after the server's TTL
    assert sum("reconnecting" in n for n in notes) == 1
