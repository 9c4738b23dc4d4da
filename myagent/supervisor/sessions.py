"""Sessions as the front process holds them: seq, replay buffer, history.

A session's events are numbered here (``seq``, gapless, per session), encoded
once, kept in a bounded replay buffer and handed to the attached connection's
outbound queue. The front process also keeps each session's conversation
history (every message the sandbox appended), which is what lets a session be
re-opened on another sandbox when its own dies.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from myagent.protocol.envelope import iso_utc
from myagent.protocol.events import TERMINAL_EVENTS

import orjson

if TYPE_CHECKING:
    from myagent.supervisor.connection import Connection
    from myagent.supervisor.pool import Sandbox

_turn_ids = itertools.count(1)


def new_session_id() -> str:
    return "s_" + secrets.token_urlsafe(12)


def new_turn_id() -> str:
    return f"t{next(_turn_ids)}"


def encode_history(messages: list) -> list[str]:
    """History messages as the front holds them: JSON text."""
    return [m if isinstance(m, str) else orjson.dumps(m).decode() for m in messages]


def decode_history(messages: list) -> list[dict]:
    return [orjson.loads(m) if isinstance(m, str) else m for m in messages]


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(slots=True)
class Turn:
    id: str
    started: float
    message_id: str | None = None
    first_event: float | None = None
    pending_steps: set[str] = field(default_factory=set)
    timer: Any = None  # asyncio.TimerHandle of the turn timeout


@dataclass(eq=False, slots=True)
class Session:
    id: str
    token_hash: bytes
    owner: str
    created: float
    history_limit: int
    replay_limit: int
    connection: "Connection | None" = None
    sandbox: "Sandbox | None" = None
    seq: int = 0
    replay: deque = field(default_factory=deque)  # (seq, encoded bytes)
    history: list = field(default_factory=list)
    turn: Turn | None = None
    detached_at: float | None = None
    last_active: float = field(default_factory=time.monotonic)
    recent_message_ids: deque = field(default_factory=lambda: deque(maxlen=64))
    turns: int = 0
    restoring: bool = False
    store: Any = None  # a durable SessionStore, or None: every event and message is written behind
    leased: bool = True  # shared stores: this node holds the session's lease
    agent: str = ""

    def record(self) -> Any:
        from myagent.supervisor.store import SessionRecord

        return SessionRecord(self.id, self.owner, self.token_hash.hex(), self.agent, self.created, time.time(),
                             self.seq, self.turn.id if self.turn is not None else None)

    def persist(self) -> None:
        if self.store is not None:
            self.store.put_record(self.record())

    def check_token(self, token: str) -> bool:
        return hmac.compare_digest(self.token_hash, hash_token(token))

    def emit(self, event: str, content: Any = None, metadata: dict | None = None,
             step_id: str | None = None) -> bytes:
        """Number, encode, buffer and deliver one event of this session."""
        self.seq += 1
        seq = self.seq
        meta = metadata if metadata is not None else {}
        connection = self.connection
        if connection is not None:
            meta["connection_id"] = connection.id
        envelope = {"event": event, "timestamp": iso_utc(time.time()), "session_id": self.id, "seq": seq,
                    "event_id": f"{self.id}:{seq}"}
        if step_id is not None:
            envelope["step_id"] = step_id
        envelope["content"] = content
        envelope["metadata"] = meta
        data = orjson.dumps(envelope)
        replay = self.replay
        replay.append((seq, data))
        if self.store is not None:
            self.store.add_event(self.id, seq, data)
        if len(replay) > self.replay_limit:
            replay.popleft()
        if connection is not None:
            connection.enqueue(data)
        if event in TERMINAL_EVENTS and self.turn is not None:
            self.end_turn()
        self.last_active = time.monotonic()
        return data

    def end_turn(self) -> Turn | None:
        turn, self.turn = self.turn, None
        if turn is not None and turn.timer is not None:
            turn.timer.cancel()
        self.persist()
        return turn

    def ack(self, last_seq: int) -> None:
        replay = self.replay
        while replay and replay[0][0] <= last_seq:
            replay.popleft()
        if self.store is not None:
            # Keep the newest event stored: it is what tells a revived session its seq
            # (the record's seq is only written at turn boundaries).
            self.store.trim_events(self.id, min(last_seq, self.seq - 1))

    def events_after(self, last_seq: int) -> tuple[list[bytes], int | None]:
        """Buffered events with seq > last_seq, and the first missing seq if the buffer lost some."""
        first = self.replay[0][0] if self.replay else self.seq + 1
        gap = last_seq + 1 if first > last_seq + 1 and last_seq < self.seq else None
        return [data for seq, data in self.replay if seq > last_seq], gap

    def add_history(self, message: str) -> None:
        """``message`` is JSON text: the front never looks inside history messages, and strings
        are invisible to the garbage collector (millions of dicts made every full GC crawl)."""
        self.history.append(message)
        if self.store is not None:
            self.store.add_message(self.id, message)
        if len(self.history) > self.history_limit:
            del self.history[: len(self.history) - self.history_limit]


class SessionRegistry:
    """All sessions of this node, by id."""

    def __init__(self, history_limit: int, replay_limit: int, store: Any = None, agent: str = "") -> None:
        self.sessions: dict[str, Session] = {}
        self.history_limit = history_limit
        self.replay_limit = replay_limit
        self.store = store if store is not None and store.durable else None
        self.agent = agent

    def create(self, owner: str) -> tuple[Session, str]:
        token = secrets.token_urlsafe(24)
        session = Session(new_session_id(), hash_token(token), owner, time.time(), self.history_limit,
                          self.replay_limit, store=self.store, agent=self.agent)
        self.sessions[session.id] = session
        return session, token

    def revive(self, stored: Any) -> Session:
        """Rebuild a session from the store (after a restart, or from another node)."""
        record = stored.record
        session = Session(record.id, bytes.fromhex(record.token_hash), record.owner, record.created,
                          self.history_limit, self.replay_limit, store=self.store, agent=record.agent)
        session.history = encode_history(stored.history[-self.history_limit:])
        session.replay.extend(stored.events[-self.replay_limit:])
        session.seq = max([record.seq] + [seq for seq, _ in stored.events])
        self.sessions[session.id] = session
        return session

    def get(self, sid: Any) -> Session | None:
        return self.sessions.get(sid) if isinstance(sid, str) else None

    def remove(self, sid: str) -> Session | None:
        session = self.sessions.pop(sid, None)
        if session is not None and self.store is not None:
            self.store.delete(sid)
        return session

    def __len__(self) -> int:
        return len(self.sessions)

    def detached(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.connection is None]
