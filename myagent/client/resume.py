"""One session across connections: when the connection drops, reconnect with backoff and resume.

What the browser console does (docs/protocol.md, Reconnecting and replay):
on a new connection, ``user.reconnect`` with the session's resume token and
the highest seq processed; the server replays what was missed, then sends
``agent.session_resumed``. :meth:`ResumingSession.next_event` yields the
replayed events (the resumed event last) in order, then the live ones, so a
caller reading a turn does not see the gap. Resuming starts as soon as the
connection closes, even while nobody reads (the user sits at the prompt).

Attempts follow :class:`myagent.client.backoff.Backoff`; a refusal that
cannot change (an expired session: ``SESSION_NOT_FOUND``, a refused token)
stops at once. Either way :class:`SessionLost` says why, once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from myagent.client import AgentClient, ClientError, ClientSession, ConnectionLost
from myagent.client.backoff import Backoff
from myagent.client.reasons import describe, retryable
from myagent.protocol import events as ev
from myagent.protocol.errors import is_recoverable

CLOSE_TIMEOUT = 2.0  # seconds to wait for agent.session_end when closing (then leave it to the TTL)


class SessionLost(Exception):
    """The session cannot be resumed; the message says why, for people."""


class ResumingSession:
    """A session that outlives its connection. ``notify(text, style)`` tells the user."""

    def __init__(self, url: str, token: str | None, notify: Callable[[str, str], None],
                 backoff: Backoff | None = None, open_timeout: float = 10.0) -> None:
        self.url = url
        self.token = token
        self.notify = notify
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.client: AgentClient | None = None
        self.session: ClientSession | None = None
        self.lost: SessionLost | None = None
        self._backlog: deque[dict] = deque()  # replayed events not read yet
        self._resuming: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._closing = False

    async def _connect(self) -> AgentClient:
        return await AgentClient.connect(self.url, token=self.token, open_timeout=self.open_timeout)

    async def open(self) -> ClientSession:
        """Connect and create the session (exceptions as AgentClient.connect / create_session)."""
        self.client = await self._connect()
        try:
            self.session = await self.client.create_session()
        except BaseException:
            await self.client.close()
            raise
        self._watch()
        return self.session

    def _watch(self) -> None:
        client = self.client
        assert client is not None

        async def watch() -> None:
            taken = asyncio.get_running_loop().create_task(watch_takeover())
            try:
                await client.closed.wait()
            finally:
                taken.cancel()
            if not self._closing and client is self.client:
                try:
                    await self.resumed()
                except (SessionLost, asyncio.CancelledError):
                    pass  # told already; the next call raises it

        async def watch_takeover() -> None:
            # The server tells the connection (a system.notice of no session) that another one
            # resumed the session: hand it to the session's stream, where next_event sees it.
            while True:
                event = await client.system.get()
                meta = event.get("metadata") or {}
                session = self.session
                if meta.get("taken_over") and session is not None and meta.get("session_id") == session.id:
                    session.queue.put_nowait(event)

        self._watcher = asyncio.get_running_loop().create_task(watch())

    async def resumed(self) -> None:
        """Return once the session is attached to an open connection (resuming it if needed)."""
        if self.lost is not None:
            raise self.lost
        assert self.client is not None
        if not self.client.closed.is_set():
            return
        if self._resuming is None or self._resuming.done():
            self._resuming = asyncio.get_running_loop().create_task(self._resume())
        await asyncio.shield(self._resuming)

    async def _resume(self) -> None:
        assert self.client is not None and self.session is not None
        old = self.session
        self.notify(f"reconnecting… ({self.client.close_reason})", "yellow")
        loop = asyncio.get_running_loop()
        started, attempt = loop.time(), 0
        while True:
            attempt += 1
            try:
                reason = await self._attempt(old)
            except Exception as exc:  # noqa: BLE001 - SessionLost, or a bug: said in one line either way
                self.lost = exc if isinstance(exc, SessionLost) else SessionLost(f"cannot resume: {exc!r}")
                self.notify(str(self.lost), "red")
                raise self.lost from None
            if reason is None:
                return
            delay = self.backoff.delay(attempt)
            if self.backoff.gives_up(loop.time() - started, delay):
                self.lost = SessionLost(f"could not reconnect within {self.backoff.give_up_after:g} s "
                                        f"({reason}); session {old.id} is left to expire")
                self.notify(str(self.lost), "red")
                raise self.lost
            await asyncio.sleep(delay)

    async def _attempt(self, old: ClientSession) -> str | None:
        """One reconnect: None when resumed, else why it failed and may work later."""
        try:
            client = await self._connect()
        except Exception as exc:  # noqa: BLE001 - every connect failure is described, none is a traceback
            if not retryable(exc):
                raise SessionLost(f"cannot reconnect to {self.url}: {describe(exc, self.url, bool(self.token))}") \
                    from None
            return describe(exc, self.url, bool(self.token))
        try:
            session, replayed = await client.reconnect(old.id, old.resume_token or "", old.last_seq)
        except ClientError as exc:
            await client.close()
            if exc.code and is_recoverable(exc.code):
                return str(exc)
            raise SessionLost(f"session {old.id} could not be resumed ({exc.code}): it expired or the server "
                              "no longer has it") from None
        except (ConnectionLost, TimeoutError):
            await client.close()
            return "the connection dropped while resuming"
        # Unread events of the old connection first (their seqs are below the replayed ones).
        self._backlog.extend(old.received())
        self._backlog.extend(replayed)
        self.client, self.session = client, session
        resumed = (replayed[-1].get("metadata") or {}) if replayed else {}
        missed = resumed.get("replayed") or 0
        self.notify(f"resumed session {session.id}" + (f" ({missed} missed events replayed)" if missed else ""),
                    "green")
        if resumed.get("replay_gap_from"):
            self.notify(f"events from #{resumed['replay_gap_from']} on could not be replayed", "yellow")
        self._watch()
        return None

    async def next_event(self) -> dict:
        """The session's next event, resuming (and replaying) across a dropped connection."""
        while True:
            if self._backlog:
                return self._backlog.popleft()
            assert self.session is not None
            try:
                event = await self.session.next_event(None)
            except ConnectionLost:
                await self.resumed()
                continue
            if event.get("event") == ev.SYSTEM_NOTICE and (event.get("metadata") or {}).get("taken_over"):
                # Resuming would take it back, and the other client would do the same: a ping-pong.
                self.lost = SessionLost(f"session {self.session.id} was taken over by another connection "
                                        "(another client resumed it)")
                self.notify(str(self.lost), "red")
                raise self.lost
            return event

    def take_pending(self) -> list[dict]:
        """Events already received and not read (between turns), without waiting."""
        out = list(self._backlog)
        self._backlog.clear()
        return out + (self.session.received() if self.session is not None else [])

    async def send(self, frame_for: Callable[[str], dict]) -> int:
        """Send ``frame_for(session_id)``, after resuming if the connection is down. Returns the
        highest seq received when it was sent: events up to it (a resume included) came before."""
        while True:
            await self.resumed()
            assert self.client is not None and self.session is not None
            try:
                await self.client.send_frame(frame_for(self.session.id))
                return self.session.last_seq
            except ConnectionLost:
                continue

    async def close(self) -> None:
        """Close the session (user.close_session) if connected, then the connection. Never raises."""
        self._closing = True
        for task in (self._watcher, self._resuming):
            if task is not None and not task.done():
                task.cancel()
        if self.client is None:
            return
        if self.session is not None and not self.client.closed.is_set():
            try:
                await self.session.close(CLOSE_TIMEOUT)
            except (ClientError, ConnectionLost, TimeoutError):
                pass  # it expires after the server's session_ttl
        await self.client.close()

    @property
    def session_id(self) -> str | None:
        return self.session.id if self.session else None

