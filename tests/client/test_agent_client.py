"""AgentClient without a server: events of no session are kept bounded, newest first."""

from __future__ import annotations

import asyncio

import orjson

from myagent.client import SYSTEM_QUEUE, AgentClient


class FakeWebSocket:
    """Yields the given frames, then ends as a closed connection does."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for frame in self.frames:
            yield frame


async def test_events_of_no_session_keep_the_newest_and_stay_bounded():
    frames = [orjson.dumps({"event": "system.heartbeat", "metadata": {"n": n}}) for n in range(SYSTEM_QUEUE + 50)]
    client = AgentClient(FakeWebSocket(frames))
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.system.qsize() == SYSTEM_QUEUE
    assert client.system.get_nowait()["metadata"]["n"] == 50  # the 50 oldest were dropped
