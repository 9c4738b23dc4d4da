"""Sessions as the front process holds them: seq, replay buffer, history, inbox.

A session's events are numbered here (``seq``, gapless, per session), framed
once (:func:`myagent.protocol.envelope.session_envelope`), kept in a bounded
replay buffer and handed to the attached connection's outbound queue. The
front also keeps each session's conversation history as JSON text (every
message the sandbox appended, and the user's messages, which it records
itself), which is what lets a session be re-opened on another sandbox when
its own dies. Delivering an event never changes the session's state: turns
start and end in :mod:`myagent.supervisor.turns`, placement changes in
:mod:`myagent.supervisor.placement`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from myagent.protocol.envelope import event_body, session_envelope, utc_stamp
from myagent.protocol.usage import UsageTotals
from myagent.supervisor.store.base import SessionRecord

import orjson

if TYPE_CHECKING:
    from myagent.supervisor.connection import Connection
    from myagent.supervisor.sandboxes import Sandbox

log = logging.getLogger("myagent.supervisor.sessions")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one session may hold, in messages and in bytes (shared by every session)."""

    history: int = 2000
    history_bytes: int = 4 << 20
    replay: int = 1000
    replay_bytes: int = 1 << 20


def new_session_id() -> str:
    return "s_" + secrets.token_urlsafe(12)


def new_turn_id() -> str:
    """Unique across sessions and restarts, and not guessable: a sandbox that learns a session id
    still cannot name that session's turn."""
    return "t_" + secrets.token_urlsafe(9)


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
    text: str
    message_id: str | None = None
    multitask: str = "enqueue"
    started: float = 0.0           # monotonic; 0 while queued
    history_mark: int = 0          # session.history_added before this turn's user message
    first_event: float | None = None
    pending_steps: set[str] = field(default_factory=set)
    tools_running: int = 0         # between agent.tool_call and its agent.tool_result: agent code runs
    timer: Any = None              # asyncio.TimerHandle of the turn timeout
    cancelling: str | None = None  # the reason a cancel was sent with
    grace: Any = None              # asyncio.TimerHandle: --cancel-grace after the cancel
    rollback: bool = False         # drop this turn's messages once it has ended
    dispatched: bool = False       # sent to the sandbox (a budgeted turn waits for its balance first)
    spent: int = 0                 # tokens its sandbox reported as each LLM request ended (budgets on)
    trace: Any = None              # the front's span of this turn, when traces are exported


@dataclass(eq=False, slots=True)
class Session:
    id: str
    token_hash: bytes
    owner: str
    created: float
    limits: Limits
    connection: "Connection | None" = None
    sandbox: "Sandbox | None" = None  # written by Placement only
    placing: bool = False             # an open (restore, move, rollback) is in flight
    restoring: bool = False           # its sandbox was lost; Recovery is placing it again
    seq: int = 0
    replay: deque = field(default_factory=deque)  # (seq, encoded bytes)
    replay_bytes: int = 0
    history: list = field(default_factory=list)   # JSON text per message
    history_bytes: int = 0            # UTF-8 size of history: it must fit one pipe frame
    history_added: int = 0            # messages ever added (trimming does not lower it)
    turn: Turn | None = None
    inbox: deque = field(default_factory=deque)   # queued Turns, waiting for the session to be free
    ended_turns: deque = field(default_factory=lambda: deque(maxlen=4))  # late frames of these are quiet
    detached_at: float | None = None
    last_active: float = field(default_factory=time.monotonic)
    recent_message_ids: deque = field(default_factory=lambda: deque(maxlen=64))
    turns: int = 0
    address: str = ""                 # the client address that created (or revived) it
    crashes: deque = field(default_factory=lambda: deque(maxlen=64))  # when its turns crashed a sandbox
    quarantined: bool = False
    closed: bool = False              # ended or forgotten: nothing may place or run it any more
    store: Any = None  # a durable SessionStore, or None: every event and message is written behind
    leased: bool = True  # shared stores: this node holds the session's lease
    agent: str = ""
    key: bytes = b""  # the id as bytes, for framing events
    usage: UsageTotals = field(default_factory=UsageTotals)  # the sums of its turns' usage

    def __post_init__(self) -> None:
        self.key = self.id.encode()

    def record(self) -> Any:
        return SessionRecord(self.id, self.owner, self.token_hash.hex(), self.agent, self.created, time.time(),
                             self.seq, self.turn.id if self.turn is not None else None,
                             usage=self.usage.as_dict() if self.usage.turns else None)

    def persist(self) -> None:
        if self.store is not None:
            self.store.put_record(self.record())

    def check_token(self, token: str) -> bool:
        return hmac.compare_digest(self.token_hash, hash_token(token))

    @property
    def free(self) -> bool:
        """Hosted, not being placed, no turn running: a message may start a turn now."""
        return self.turn is None and self.sandbox is not None and not self.placing

    def emit(self, event: str, content: Any = None, metadata: dict | None = None,
             step_id: str | None = None) -> bytes:
        """Number, frame, buffer and deliver one event the front process itself says."""
        return self.deliver(event.encode(), event_body(content, metadata if metadata is not None else {}, step_id))

    def deliver(self, event: bytes, body: bytes) -> bytes:
        """Number, frame, buffer and deliver one event (its name and body already encoded and checked)."""
        self.seq += 1
        seq = self.seq
        connection = self.connection
        data = session_envelope(event, utc_stamp(time.time()), self.key, seq, body,
                                connection.key if connection is not None else None)
        replay = self.replay
        replay.append((seq, data))
        self.replay_bytes += len(data)
        limits = self.limits
        dropped = 0
        while len(replay) > 1 and (len(replay) > limits.replay or self.replay_bytes > limits.replay_bytes):
            dropped, old = replay.popleft()
            self.replay_bytes -= len(old)
        if self.store is not None:
            self.store.add_event(self.id, seq, data)
            if dropped and not seq & 31:  # the store follows the buffer's bounds, one trim per 32 events
                self.store.trim_events(self.id, dropped)
        if connection is not None:
            connection.enqueue(data)
        return data

    def ack(self, last_seq: int) -> None:
        replay = self.replay
        while replay and replay[0][0] <= last_seq:
            self.replay_bytes -= len(replay.popleft()[1])
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
        size = len(message.encode())
        if size > self.limits.history_bytes:
            log.warning("session %s: a history message of %d bytes is over --max-history-bytes; not kept",
                        self.id, size, extra={"session_id": self.id})
            return
        self.history.append(message)
        self.history_bytes += size
        self.history_added += 1
        if self.store is not None:
            self.store.add_message(self.id, message)
        self._trim_history()

    def set_history(self, messages: list[str]) -> None:
        """Replace the history (a new or revived session): the newest messages within the limits."""
        self.history = [m for m in messages if len(m.encode()) <= self.limits.history_bytes]
        self.history_bytes = sum(len(m.encode()) for m in self.history)
        self.history_added = len(self.history)
        self._trim_history()

    def _trim_history(self) -> None:
        history, limits = self.history, self.limits
        drop = max(0, len(history) - limits.history)
        excess = self.history_bytes - limits.history_bytes
        while excess > 0 and drop < len(history) - 1:
            excess -= len(history[drop].encode())
            drop += 1
        if drop:
            self.history_bytes -= sum(len(m.encode()) for m in history[:drop])
            del history[:drop]

    def drop_history_since(self, mark: int) -> int:
        """Forget the messages added after ``history_added`` was ``mark`` (a rolled-back turn's)."""
        count = min(self.history_added - mark, len(self.history))
        if count <= 0:
            return 0
        self.history_bytes -= sum(len(m.encode()) for m in self.history[-count:])
        del self.history[-count:]
        self.history_added -= count
        if self.store is not None:
            self.store.replace_history(self.id, list(self.history))
        return count


class SessionRegistry:
    """All sessions of this node, by id."""

    def __init__(self, limits: Limits, store: Any = None, agent: str = "") -> None:
        self.sessions: dict[str, Session] = {}
        self.limits = limits
        # Sessions held per principal and per client address (attached and detached).
        self.by_owner: Counter[str] = Counter()
        self.by_address: Counter[str] = Counter()
        self.store = store if store is not None and store.durable else None
        self.agent = agent

    def create(self, owner: str, history: list | None = None, address: str = "") -> tuple[Session, str]:
        token = secrets.token_urlsafe(24)
        session = Session(new_session_id(), hash_token(token), owner, time.time(), self.limits,
                          store=self.store, agent=self.agent)
        session.set_history(encode_history(history or []))
        self._add(session, address)
        return session, token

    def _add(self, session: Session, address: str) -> None:
        session.address = address
        self.sessions[session.id] = session
        self.by_owner[session.owner] += 1
        self.by_address[address] += 1

    def revive(self, stored: Any, address: str = "") -> Session:
        """Rebuild a session from the store (after a restart, or from another node)."""
        record = stored.record
        session = Session(record.id, bytes.fromhex(record.token_hash), record.owner, record.created, self.limits,
                          store=self.store, agent=record.agent)
        session.set_history(encode_history(stored.history))
        session.usage = UsageTotals.from_dict(record.usage)
        for seq, data in stored.events[-self.limits.replay:]:
            session.replay.append((seq, data))
            session.replay_bytes += len(data)
        while len(session.replay) > 1 and session.replay_bytes > self.limits.replay_bytes:
            session.replay_bytes -= len(session.replay.popleft()[1])
        session.seq = max([record.seq] + [seq for seq, _ in stored.events])
        self._add(session, address)
        return session

    def get(self, sid: Any) -> Session | None:
        return self.sessions.get(sid) if isinstance(sid, str) else None

    def remove(self, sid: str, *, keep_stored: bool = False) -> Session | None:
        """Forget a session; ``keep_stored`` leaves the store's copy (another node owns it now)."""
        session = self.sessions.pop(sid, None)
        if session is None:
            return None
        for counter, key in ((self.by_owner, session.owner), (self.by_address, session.address)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
        if self.store is not None and not keep_stored:
            self.store.delete(sid)
        return session

    def oldest_detached(self, *, owner: str | None = None, address: str | None = None) -> Session | None:
        """The longest-detached idle session of ``owner`` or from ``address`` (the first to evict)."""
        best = None
        for s in self.sessions.values():
            if s.connection is None and s.turn is None and s.detached_at is not None and (
                    owner is None or s.owner == owner) and (address is None or s.address == address) and (
                    best is None or s.detached_at < best.detached_at):
                best = s
        return best

    def __len__(self) -> int:
        return len(self.sessions)

    def detached(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.connection is None]
