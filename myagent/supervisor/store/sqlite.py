"""SQLite session store: the single-node default.

One writer thread owns the write connection and applies queued operations in
batches, one transaction per batch (WAL mode, synchronous=NORMAL: a committed
batch survives a crash of the process; the last few milliseconds of queued
writes may not survive a kill -9). The event loop only appends to a queue.
Reads (rare: a client reconnecting after a restart) run in a worker thread on
a separate connection after the queue has been flushed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from typing import Any

import orjson

from myagent.supervisor.store.base import SessionRecord, SessionStore, StoredSession, StoreError

log = logging.getLogger("myagent.supervisor.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record BLOB NOT NULL, last_active REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_last_active ON sessions (last_active);
CREATE TABLE IF NOT EXISTS messages (n INTEGER PRIMARY KEY AUTOINCREMENT, sid TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS messages_sid ON messages (sid, n);
CREATE TABLE IF NOT EXISTS events (sid TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,
                                   PRIMARY KEY (sid, seq)) WITHOUT ROWID;
"""
BATCH = 5000
# Past max_pending the store reports itself full (/ready 503, new sessions refused) but still
# queues; past HARD_FACTOR times that it drops writes and says so in the log and /status.
HARD_FACTOR = 10


class SQLiteStore(SessionStore):
    name = "sqlite"

    def __init__(self, path: str, **limits: Any) -> None:
        super().__init__(**limits)
        self.path = os.path.abspath(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # Queue length as two counters, each written by one thread only (the event loop counts
        # what it queues, the writer what it applied): a shared ``+=``/``-=`` loses updates.
        self._queued = 0
        self._done = 0
        self._thread: threading.Thread | None = None
        self._read: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self.dropped = 0
        self.batches = 0

    def describe(self) -> str:
        return self.path

    async def start(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            write = self._connect()
            os.chmod(self.path, 0o600)  # conversations: owner only (SQLite gives -wal/-shm the same mode)
            write.executescript(SCHEMA)
            self._read = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        self._thread = threading.Thread(target=self._writer, args=(write,), name="sqlite-store", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join, 10)
        self._thread = None
        if self._read is not None:
            self._read.close()

    # Write-behind ----------------------------------------------------------------
    def _put(self, op: tuple) -> None:
        if self._queued - self._done >= self.max_pending * HARD_FACTOR:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10000 == 0:
                log.error("sqlite store %s is not keeping up: %d writes dropped", self.path, self.dropped)
            self.error = f"store overloaded: {self.dropped} writes dropped"
            return
        self._queued += 1
        self._queue.put(op)

    def put_record(self, record: SessionRecord) -> None:
        self._put(("rec", record.id, orjson.dumps(record.to_dict()), record.last_active))

    def add_message(self, sid: str, message: str) -> None:
        self._put(("msg", sid, message.encode()))

    def add_event(self, sid: str, seq: int, data: bytes) -> None:
        self._put(("ev", sid, seq, data))

    def trim_events(self, sid: str, upto_seq: int) -> None:
        self._put(("trim", sid, upto_seq))

    def delete(self, sid: str) -> None:
        self._put(("del", sid))

    @property
    def pending(self) -> int:
        return max(0, self._queued - self._done)

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._thread is None:
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._queue.put(("flush", lambda: loop.call_soon_threadsafe(
            lambda: done.done() or done.set_result(None))))
        await done

    def _writer(self, conn: sqlite3.Connection) -> None:
        while True:
            ops = [self._queue.get()]
            while len(ops) < BATCH:
                try:
                    ops.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(op is None for op in ops)
            ops = [op for op in ops if op is not None]
            try:
                self._apply(conn, ops)
                self.error = None if not self.dropped else self.error
            except Exception as exc:  # noqa: BLE001 - the writer thread must outlive any bad batch
                self.error = f"sqlite write failed: {exc}"
                log.error("sqlite store %s: %s (%d writes lost)", self.path, exc, len(ops))
            self._done += len([op for op in ops if op[0] != "flush"])
            for op in ops:
                if op[0] == "flush":
                    try:
                        op[1]()
                    except RuntimeError:  # the waiting event loop is gone
                        pass
            if stop:
                conn.close()
                return

    def _apply(self, conn: sqlite3.Connection, ops: list[tuple]) -> None:
        events: dict[str, int] = {}
        messages: set[str] = set()
        conn.execute("BEGIN")
        try:
            for op in ops:
                kind = op[0]
                if kind == "ev":
                    conn.execute("INSERT OR REPLACE INTO events (sid, seq, body) VALUES (?, ?, ?)", op[1:])
                    events[op[1]] = max(events.get(op[1], 0), op[2])
                elif kind == "msg":
                    conn.execute("INSERT INTO messages (sid, body) VALUES (?, ?)", op[1:])
                    messages.add(op[1])
                elif kind == "rec":
                    conn.execute("INSERT OR REPLACE INTO sessions (id, record, last_active) VALUES (?, ?, ?)",
                                 op[1:])
                elif kind == "trim":
                    conn.execute("DELETE FROM events WHERE sid = ? AND seq <= ?", op[1:])
                elif kind == "del":
                    for table, column in (("sessions", "id"), ("messages", "sid"), ("events", "sid")):
                        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (op[1],))
            # Bounds: the replay log keeps events_limit events, the history history_limit messages.
            for sid, top in events.items():
                conn.execute("DELETE FROM events WHERE sid = ? AND seq <= ?", (sid, top - self.events_limit))
            for sid in messages:
                conn.execute("DELETE FROM messages WHERE sid = ? AND n <= (SELECT n FROM messages WHERE sid = ? "
                             "ORDER BY n DESC LIMIT 1 OFFSET ?)", (sid, sid, self.history_limit))
            conn.execute("COMMIT")
            self.batches += 1
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # Reads ----------------------------------------------------------------------------
    async def load(self, sid: str) -> StoredSession | None:
        await self.flush()
        return await asyncio.to_thread(self._load, sid)

    def _load(self, sid: str) -> StoredSession | None:
        assert self._read is not None
        with self._read_lock:
            row = self._read.execute("SELECT record FROM sessions WHERE id = ?", (sid,)).fetchone()
            if row is None:
                return None
            history = [orjson.loads(body) for (body,) in self._read.execute(
                "SELECT body FROM messages WHERE sid = ? ORDER BY n", (sid,))]
            events = [(seq, bytes(body)) for seq, body in self._read.execute(
                "SELECT seq, body FROM events WHERE sid = ? ORDER BY seq", (sid,))]
        return StoredSession(SessionRecord.from_dict(orjson.loads(row[0])), history, events)

    async def expired(self, idle_before: float, limit: int = 1000) -> list[str]:
        def query() -> list[str]:
            assert self._read is not None
            with self._read_lock:
                return [sid for (sid,) in self._read.execute(
                    "SELECT id FROM sessions WHERE last_active < ? LIMIT ?", (idle_before, limit))]

        return await asyncio.to_thread(query)
