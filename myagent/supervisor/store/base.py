"""The session store interface: durability behind the in-memory registry.

The front process keeps every live session in memory; a store makes them
survive a restart of the server (SQLite) or of a whole node (Redis). Writes
are write-behind: the hot path calls the non-blocking ``put_*``/``add_*``/
``replace_history`` methods, which only append to a buffer (O(1), no I/O); a
background writer batches them (SQLite: a writer process; Redis: pipelines). Reads happen
only on a miss (a client reconnects to a session this process does not know).

A store that cannot keep up or is down reports it through ``health`` (shown in
/ready and /status) and its queue is bounded: past ``max_pending`` writes the
store is "full" and the server refuses new sessions with STORE_UNAVAILABLE
rather than losing data silently.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SessionRecord:
    """Per-session metadata. ``token_hash`` is the SHA-256 of the resume token, hex."""

    id: str
    owner: str
    token_hash: str
    agent: str
    created: float
    last_active: float
    seq: int = 0
    turn_id: str | None = None  # set while a turn runs: a restart finds it and reports it interrupted
    node: str = ""
    usage: dict[str, Any] | None = None  # the session's usage totals (myagent.protocol.usage.UsageTotals)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # flat fields: asdict's deep copy cost 16 µs per record

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "SessionRecord":
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


@dataclass
class StoredSession:
    record: SessionRecord
    history: list[dict] = field(default_factory=list)
    events: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, encoded event), ascending


class DayCounts:
    """Tokens spent per budget holder on the current UTC day; older days are forgotten (their
    balances have reset), so it holds one day of holders at most."""

    __slots__ = ("day", "counts")

    def __init__(self) -> None:
        self.day = ""
        self.counts: dict[str, int] = {}

    def get(self, key: str, day: str) -> int | None:
        return self.counts.get(key) if day == self.day else None

    def set(self, key: str, day: str, tokens: int) -> None:
        if day != self.day:
            if day < self.day:
                return  # a late write of a past day: that balance has reset
            self.day, self.counts = day, {}
        self.counts[key] = tokens


class StoreError(Exception):
    """The store is unreachable or refused a write; the message is safe to show operators."""


class SessionStore(abc.ABC):
    """Backends: memory (no durability), sqlite (single node, default), redis (many nodes)."""

    name = "abstract"
    durable = True
    shared = False  # True when several nodes use the store: sessions are leased

    def __init__(self, *, history_limit: int = 2000, events_limit: int = 1000,
                 max_pending: int = 100_000) -> None:
        self.history_limit = history_limit
        self.events_limit = events_limit
        self.max_pending = max_pending
        self.error: str | None = None  # last failure, cleared by the next success
        self._days = DayCounts()  # token balances (memory store; SQLite's cache)

    # Lifecycle
    async def start(self) -> None:
        """Connect / open files; raise StoreError if the store is unusable at start."""

    async def stop(self) -> None:
        """Flush pending writes and close."""

    # Write-behind (never block, never raise)
    @abc.abstractmethod
    def put_record(self, record: SessionRecord) -> None: ...

    @abc.abstractmethod
    def add_message(self, sid: str, message: str) -> None:
        """``message``: one history message as JSON text (how the front process holds them)."""

    def replace_history(self, sid: str, messages: list[str]) -> None:
        """Replace the session's stored history with ``messages`` (JSON text, oldest first),
        e.g. after a turn was rolled back. Write-behind, ordered with every other write."""
        raise NotImplementedError(f"{type(self).__name__} cannot replace a history")

    @abc.abstractmethod
    def add_event(self, sid: str, seq: int, data: bytes) -> None: ...

    def replace_history(self, sid: str, messages: list[str]) -> None:
        """Replace a session's stored history (a rolled-back turn's messages are dropped)."""
        raise NotImplementedError

    @abc.abstractmethod
    def trim_events(self, sid: str, upto_seq: int) -> None: ...

    @abc.abstractmethod
    def delete(self, sid: str) -> None: ...

    # Reads
    @abc.abstractmethod
    async def load(self, sid: str) -> StoredSession | None: ...

    @abc.abstractmethod
    async def expired(self, idle_before: float, limit: int = 1000) -> list[str]:
        """Ids of sessions whose last activity (epoch seconds) is older than ``idle_before``."""

    # Leases (one node runs a session at a time); single-node stores always grant.
    async def acquire(self, sid: str, node: str, ttl: float) -> bool:
        return True

    async def renew(self, sids: list[str], node: str, ttl: float) -> list[str]:
        """Extend leases; return the sessions another node has taken."""
        return []

    async def release(self, sid: str, node: str) -> None:
        return None

    # Token budgets (myagent/supervisor/budgets.py): tokens each holder spent per UTC day
    # (``day`` is ``YYYY-MM-DD``). Shared stores must make ``spend`` atomic across nodes.
    async def spent(self, key: str, day: str) -> int:
        """Tokens ``key`` spent on ``day``; StoreError if the store cannot say."""
        return self._days.get(key, day) or 0

    async def spend(self, key: str, day: str, tokens: int) -> int:
        """Add ``tokens`` to what ``key`` spent on ``day``; return the new total."""
        total = (self._days.get(key, day) or 0) + tokens
        self._days.set(key, day, total)
        return total

    # Health
    def describe(self) -> str:
        """Where the data lives, for the start-up line and /status (no secrets)."""
        return self.name

    @property
    def pending(self) -> int:
        return 0

    @property
    def full(self) -> bool:
        return self.pending >= self.max_pending

    def health(self) -> tuple[bool, str]:
        if self.error:
            return False, self.error
        if self.full:
            return False, f"store write queue full ({self.pending} pending writes)"
        return True, "ok"


class MemoryStore(SessionStore):
    """`memory:`: nothing is persisted (the registry already holds live sessions)."""

    name = "memory"
    durable = False

    def put_record(self, record: SessionRecord) -> None:
        pass

    def add_message(self, sid: str, message: str) -> None:
        pass

    def replace_history(self, sid: str, messages: list[str]) -> None:
        pass

    def add_event(self, sid: str, seq: int, data: bytes) -> None:
        pass

    def replace_history(self, sid: str, messages: list[str]) -> None:
        pass

    def trim_events(self, sid: str, upto_seq: int) -> None:
        pass

    def delete(self, sid: str) -> None:
        pass

    async def load(self, sid: str) -> StoredSession | None:
        return None

    async def expired(self, idle_before: float, limit: int = 1000) -> list[str]:
        return []
