"""Async Python client for a myagent-ws server (used by `chat`, tests and benchmarks).

    async with await AgentClient.connect("ws://127.0.0.1:8080") as client:
        session = await client.create_session()
        async for event in session.send("What is the weather in Beijing?"):
            print(event["event"], event["content"])

One reader task routes every incoming event to its session's queue; events
with no session go to ``client.system``. ``send`` yields one turn's events and
stops after its terminal event. When the connection closes, every wait on it
(``next_event``, ``send_frame``, a pending create or reconnect) raises
:class:`ConnectionLost` instead of hanging; resuming is the caller's choice
(``myagent.client.resume`` does it for the terminal chat).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, AsyncIterator

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from myagent.protocol import events as ev

TERMINAL = ev.TERMINAL_EVENTS
_ids = itertools.count(1)
_CLOSED: dict = {"event": "<connection closed>"}  # queued to wake every waiter once the reader ends


class ClientError(Exception):
    """The server refused a request (a system.error); ``code`` is its error_code."""

    def __init__(self, event: dict) -> None:
        meta = event.get("metadata") or {}
        self.code = meta.get("error_code")
        self.event = event
        super().__init__(f"{self.code}: {event.get('content')}")


class ConnectionLost(Exception):
    """The connection closed (server restart, network drop, idle timeout): resume to go on."""


class ClientSession:
    def __init__(self, client: "AgentClient", session_id: str, resume_token: str | None,
                 created: dict | None = None) -> None:
        self.client = client
        self.id = session_id
        self.resume_token = resume_token
        self.created = created or {}
        self.last_seq = 0
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.history: list[dict] = []  # every event received, in order

    @property
    def agent_name(self) -> str | None:
        return (self.created.get("metadata") or {}).get("agent_name")

    def _deliver(self, event: dict) -> None:
        seq = event.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:  # replayed on top of what we had (docs/protocol.md: drop it)
                return
            self.last_seq = seq
        self.history.append(event)
        self.queue.put_nowait(event)

    async def next_event(self, timeout: float | None = 30.0) -> dict:
        """The next event (TimeoutError after ``timeout``; ConnectionLost once the connection closed
        and every event received before was taken)."""
        event = await asyncio.wait_for(self.queue.get(), timeout)
        if event is _CLOSED:
            self.queue.put_nowait(_CLOSED)  # for the next caller too
            raise ConnectionLost(self.client.close_reason)
        return event

    def received(self) -> list[dict]:
        """The events received and not taken yet, without waiting."""
        out = []
        while not self.queue.empty():
            event = self.queue.get_nowait()
            if event is _CLOSED:
                self.queue.put_nowait(_CLOSED)
                break
            out.append(event)
        return out

    async def send(self, text: str, *, message_id: str | None = None, multitask: str | None = None,
                   timeout: float | None = 60.0) -> AsyncIterator[dict]:
        """Send a user message; yield the turn's events through its terminal event (meant for a
        session with no other turn running or queued: see docs/protocol.md, Double texting)."""
        frame: dict[str, Any] = {"event": ev.USER_MESSAGE, "session_id": self.id, "content": text}
        meta = {k: v for k, v in (("message_id", message_id), ("multitask", multitask)) if v}
        if meta:
            frame["metadata"] = meta
        await self.client.send_frame(frame)
        async for event in self.until_terminal(timeout):
            yield event

    async def until_terminal(self, timeout: float | None = 60.0) -> AsyncIterator[dict]:
        while True:
            event = await self.next_event(timeout)
            if event.get("event") == ev.SYSTEM_ERROR and "seq" not in event:
                raise ClientError(event)
            yield event
            if event.get("event") in TERMINAL:
                return

    async def ask(self, text: str, timeout: float | None = 60.0) -> tuple[dict, list[dict]]:
        """Send and collect: (terminal event, all events of the turn)."""
        events = [e async for e in self.send(text, timeout=timeout)]
        return events[-1], events

    async def cancel(self) -> None:
        await self.client.send_frame({"event": ev.USER_CANCEL, "session_id": self.id})

    async def respond(self, step_id: str, confirmed: bool) -> None:
        await self.client.send_frame({"event": ev.USER_RESPONSE, "session_id": self.id, "step_id": step_id,
                                      "content": {"confirmed": confirmed}})

    async def ack(self, last_seq: int | None = None) -> None:
        await self.client.send_frame({"event": ev.USER_ACK, "session_id": self.id,
                                      "content": {"last_seq": self.last_seq if last_seq is None else last_seq}})

    async def close(self, timeout: float = 10.0) -> dict:
        await self.client.send_frame({"event": ev.USER_CLOSE_SESSION, "session_id": self.id})
        while True:
            event = await self.next_event(timeout)
            if event.get("event") == ev.AGENT_SESSION_END:
                return event
            if event.get("event") == ev.SYSTEM_ERROR and "seq" not in event \
                    and (event.get("metadata") or {}).get("request_event") == ev.USER_CLOSE_SESSION:
                raise ClientError(event)


SYSTEM_QUEUE = 256  # events of no session kept for client.system (oldest dropped first)


class AgentClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.sessions: dict[str, ClientSession] = {}
        # Events of no session (heartbeats, notices): a reader that never looks keeps the newest.
        self.system: asyncio.Queue[dict] = asyncio.Queue(SYSTEM_QUEUE)
        self.connected: dict = {}
        self._pending: asyncio.Queue[dict] = asyncio.Queue()  # session_created / resumed answers
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, url: str, *, token: str | None = None, open_timeout: float = 10.0,
                      headers: dict[str, str] | None = None, **kwargs: Any) -> "AgentClient":
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("max_size", 16 * 1024 * 1024)
        kwargs.setdefault("compression", None)
        ws = await connect(url, additional_headers=headers or None, open_timeout=open_timeout, **kwargs)
        client = cls(ws)
        client.connected = await asyncio.wait_for(client.system.get(), open_timeout)
        return client

    @property
    def connection_id(self) -> str | None:
        return (self.connected.get("metadata") or {}).get("connection_id")

    async def __aenter__(self) -> "AgentClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                try:
                    event = orjson.loads(message)
                except orjson.JSONDecodeError:
                    continue  # not a myagent-ws server, or a bug there: nothing to route
                if not isinstance(event, dict):
                    continue
                name = event.get("event")
                sid = event.get("session_id")
                if name in (ev.AGENT_SESSION_CREATED, ev.AGENT_SESSION_RESUMED) and sid not in self.sessions \
                        or name == ev.AGENT_STATE_RESTORED:
                    self._pending.put_nowait(event)
                    continue
                session = self.sessions.get(sid) if sid else None
                if session is None and name == ev.SYSTEM_ERROR:
                    meta_sid = (event.get("metadata") or {}).get("session_id")
                    session = self.sessions.get(meta_sid) if meta_sid else None
                    if session is None and (event.get("metadata") or {}).get("request_event") in (
                            ev.USER_CREATE_SESSION, ev.USER_RECONNECT, ev.USER_RECONNECT_WITH_STATE):
                        self._pending.put_nowait(event)
                        continue
                if session is not None:
                    session._deliver(event)
                else:
                    if self.system.full():
                        self.system.get_nowait()
                    self.system.put_nowait(event)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for queue in (self._pending, *(s.queue for s in self.sessions.values())):
                queue.put_nowait(_CLOSED)

    @property
    def close_reason(self) -> str:
        """How the connection ended, for people ("" while it is open)."""
        if not self.closed.is_set():
            return ""
        rcvd = self.ws.protocol.close_rcvd
        if rcvd is None:
            return "the connection dropped"
        return f"closed by the server ({rcvd.code}{' ' + rcvd.reason if rcvd.reason else ''})"

    async def send_frame(self, frame: dict) -> None:
        try:
            await self.ws.send(orjson.dumps(frame), text=True)
        except ConnectionClosed:
            raise ConnectionLost(self.close_reason or "the connection dropped") from None

    async def _await_pending(self, timeout: float) -> dict:
        event = await asyncio.wait_for(self._pending.get(), timeout)
        if event is _CLOSED:
            self._pending.put_nowait(_CLOSED)
            raise ConnectionLost(self.close_reason)
        if event.get("event") == ev.SYSTEM_ERROR:
            raise ClientError(event)
        return event

    async def create_session(self, content: dict | None = None, timeout: float = 15.0) -> ClientSession:
        frame: dict[str, Any] = {"event": ev.USER_CREATE_SESSION}
        if content is not None:
            frame["content"] = content
        await self.send_frame(frame)
        event = await self._await_pending(timeout)
        session = ClientSession(self, event["session_id"], (event.get("metadata") or {}).get("resume_token"), event)
        session.last_seq = event.get("seq", 0)
        session.history.append(event)
        self.sessions[session.id] = session
        return session

    async def reconnect(self, session_id: str, resume_token: str, last_seq: int = 0,
                        timeout: float = 15.0) -> tuple[ClientSession, list[dict]]:
        """Re-attach a session; return it and the replayed events (the resumed event last)."""
        session = ClientSession(self, session_id, resume_token)
        session.last_seq = last_seq
        self.sessions[session_id] = session
        try:
            await self.send_frame({"event": ev.USER_RECONNECT, "session_id": session_id,
                                   "content": {"resume_token": resume_token, "last_seq": last_seq}})
        except ConnectionLost:
            del self.sessions[session_id]
            raise
        replayed = []
        while True:
            try:
                event = await session.next_event(timeout)
            except TimeoutError:
                pending = self._pending.get_nowait() if not self._pending.empty() else None
                if pending is not None and pending.get("event") == ev.SYSTEM_ERROR:
                    del self.sessions[session_id]
                    raise ClientError(pending) from None
                raise
            replayed.append(event)
            if event.get("event") == ev.AGENT_SESSION_RESUMED:
                return session, replayed
            if event.get("event") == ev.SYSTEM_ERROR and "seq" not in event:
                del self.sessions[session_id]
                raise ClientError(event)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
