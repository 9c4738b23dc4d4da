"""SQLite session store: the single-node default.

Writes leave the front process: the hot path appends each operation to a list (a tuple of
what the caller already has; no encoding, no SQL, no I/O) and a timer hands the batch,
after ``FLUSH_INTERVAL`` (or once it holds ``FLUSH_OPS``), encoded in bulk as one frame
(:mod:`.sqlite_wire`) to a writer
*process* (:mod:`.sqlite_writer`) that applies batches in transactions (WAL,
synchronous=NORMAL, executemany) and acknowledges them (coalesced: each answer wakes the
front). In a writer thread the SQLite work was front-process CPU and doubled its cost
per event; see docs/benchmarks.md.

Durability. A batch the writer has acknowledged is committed. A kill -9 of the front loses
only what it had not handed over yet (the last ``FLUSH_INTERVAL`` of writes, plus whatever
sat in its socket transport if the writer had fallen behind): the writer
outlives it, commits every batch already sent, and exits at end of stream; a server
restarted on the same file waits for that (the writer's lock). Batches sent but not yet
acknowledged are kept, and sent again to a new writer if the writer dies (every operation
is idempotent); writer restarts are bounded (``WRITER_RESTARTS`` in ``RESTART_WINDOW``).

Reads (rare: a client reconnecting to a session this process does not hold) run in a
worker thread on a read connection, after everything queued so far is committed.

Bounds: past ``max_pending`` operations not yet committed the store reports itself full
(/ready 503, new sessions refused); past ``HARD_FACTOR`` times that it drops writes,
counts them and says so in the log and /status.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson

from myagent.supervisor.store import sqlite_rows as rows
from myagent.supervisor.store import sqlite_wire as wire
from myagent.supervisor.store.base import SessionRecord, SessionStore, StoredSession, StoreError

log = logging.getLogger("myagent.supervisor.store")

WRITER = Path(__file__).with_name("sqlite_writer.py")
FLUSH_INTERVAL = 0.01     # seconds a write waits in the front for others to join its batch
FLUSH_OPS = 2000          # ... unless the batch has grown this large: it goes at once
HARD_FACTOR = 10          # past max_pending * HARD_FACTOR uncommitted operations, writes are dropped
START_TIMEOUT = 10.0      # seconds for the writer to open the file, on top of its lock wait
STOP_TIMEOUT = 10.0       # seconds the writer gets to commit what is left at stop
LOAD_FLUSH_TIMEOUT = 5.0  # seconds a read waits for the writes queued before it
WRITER_RESTARTS = 5       # writer restarts allowed within RESTART_WINDOW seconds
RESTART_WINDOW = 60.0


def _record_op(record: SessionRecord) -> tuple:
    return (wire.RECORD, record.id, record.last_active, orjson.dumps(record))  # orjson encodes dataclasses


class _WriterLink(asyncio.Protocol):
    """The front's end of the socketpair: reads acks and failures from the writer."""

    def __init__(self, store: "SQLiteStore") -> None:
        self.store = store
        self.buf = bytearray()
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while pos < len(buf):
            kind = buf[pos:pos + 1]
            if kind == wire.OK:
                pos += 1
                if not self.ready.done():
                    self.ready.set_result(None)
                self.store._healthy_again()
            elif kind == b"A":
                if len(buf) - pos < wire.ACK.size:
                    break
                self.store._acked(wire.ACK.unpack_from(buf, pos)[1])
                pos += wire.ACK.size
            elif kind == b"F":
                if len(buf) - pos < wire.FAILURE.size:
                    break
                length = wire.FAILURE.unpack_from(buf, pos)[1]
                end = pos + wire.FAILURE.size + length
                if len(buf) < end:
                    break
                text = bytes(buf[pos + wire.FAILURE.size:end]).decode(errors="replace")
                pos = end
                if not self.ready.done():
                    self.ready.set_exception(StoreError(text))
                self.store._failed(text)
            else:  # the writer is ours: garbage means a bug; drop the link, the store restarts it
                log.error("sqlite writer sent garbage (%r); restarting it", bytes(buf[pos:pos + 8]))
                del buf[:]
                self.store._transport_abort()
                return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(StoreError("the sqlite writer exited while opening the file"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.store._writer_lost(self)


class SQLiteStore(SessionStore):
    name = "sqlite"

    def __init__(self, path: str, *, lock_wait: float = 10.0, **limits: Any) -> None:
        """``lock_wait``: seconds to wait for another writer of ``path`` (an old server still
        committing after a kill -9) before start() fails."""
        super().__init__(**limits)
        self.path = os.path.abspath(path)
        self.lock_wait = lock_wait
        self._hard = self.max_pending * HARD_FACTOR
        self._ops: list[tuple] = []                   # this batch's operations, in order
        self._records: dict[str, SessionRecord] = {}  # this batch's newest record of each session
        # Operations accepted and operations committed (or given up) by the writer; only the
        # event loop changes either.
        self._queued = 0
        self._done = 0
        self._batch = 0
        self._unacked: deque[tuple[int, int, bytes]] = deque()  # (batch, operations, frame), oldest first
        self._msg_n: dict[str, int] = {}  # sid -> number of its newest history message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._proc: subprocess.Popen | None = None
        self._transport: asyncio.Transport | None = None
        self._link: _WriterLink | None = None
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._restarts: deque[float] = deque()
        self._restarting: asyncio.Task | None = None
        self._stopping = False
        self._read: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self.dropped = 0
        self.batches = 0
        self.writer_restarts = 0

    def describe(self) -> str:
        return self.path

    @property
    def writer_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # Lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        await self._spawn()
        try:
            self._read = self._connect()
        except sqlite3.Error as exc:
            await self.stop()
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        self._send_unacked()
        self._flush_soon()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    async def _spawn(self) -> None:
        """Start a writer and wait until it has the file open; StoreError if it cannot."""
        assert self._loop is not None
        # The default socket buffer (~200 KiB): a 4 MiB one made every 10 KiB write cost 3x the
        # CPU (larger kernel buffers per write). What the front had in the transport's own buffer
        # when it is killed is lost, so the writer keeps up with the front rather than the buffer.
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-I", str(WRITER), "--fd", str(theirs.fileno()), "--path", self.path,
               "--events-limit", str(self.events_limit), "--history-limit", str(self.history_limit),
               "--lock-wait", str(self.lock_wait)]
        # A scrubbed environment: the front's may hold auth tokens; the writer needs none of it.
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
        try:
            proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                    close_fds=True)
        except OSError as exc:
            ours.close()
            raise StoreError(f"cannot start the sqlite writer: {exc}") from None
        finally:
            theirs.close()
        link = _WriterLink(self)
        transport, _ = await self._loop.connect_accepted_socket(lambda: link, ours)
        try:
            await asyncio.wait_for(asyncio.shield(link.ready), START_TIMEOUT + self.lock_wait)
        except (StoreError, TimeoutError) as exc:
            # Not ours yet (self._link is not this link): its end is no writer death to react to.
            transport.abort()
            await asyncio.to_thread(self._reap, proc, 1.0)
            why = str(exc) or f"the sqlite writer did not open {self.path} in time"
            raise StoreError(why) from None
        self._proc, self._transport, self._link = proc, transport, link
        log.debug("sqlite writer %d serves %s", proc.pid, self.path)

    async def stop(self) -> None:
        if self._loop is None:
            return
        self._stopping = True
        if self._restarting is not None:
            self._restarting.cancel()
            self._restarting = None
        self._flush_now()
        link, transport, proc = self._link, self._transport, self._proc
        if transport is not None and link is not None and proc is not None:
            # End of stream: the writer commits every batch it has, acknowledges, and exits.
            if transport.can_write_eof():
                transport.write_eof()
            done, _ = await asyncio.wait({link.closed}, timeout=STOP_TIMEOUT)
            if not done:
                log.error("sqlite writer %d did not finish within %gs; killing it", proc.pid, STOP_TIMEOUT)
                transport.abort()
            await asyncio.to_thread(self._reap, proc, STOP_TIMEOUT if done else 1.0)
        self._proc = self._transport = self._link = None
        if self.pending:
            log.error("sqlite store %s: stopped with %d writes not stored", self.path, self.pending)
        for _, future in self._waiters:
            if not future.done():
                future.set_result(None)
        self._waiters = []
        if self._read is not None:
            self._read.close()
            self._read = None
        self._loop = None

    @staticmethod
    def _reap(proc: subprocess.Popen, timeout: float) -> None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    # Writer failures ----------------------------------------------------------------------
    def _writer_lost(self, link: _WriterLink) -> None:
        if link is not self._link:
            return
        proc = self._proc
        self._transport = self._link = None
        if self._stopping or self._loop is None or self._restarting is not None:
            return
        code = proc.poll() if proc is not None else None
        self.error = f"the sqlite writer exited (code {code}); restarting it"
        log.error("sqlite store %s: writer %s exited (code %s) with %d writes not committed; restarting it",
                  self.path, proc.pid if proc else "?", code, self.pending)
        self._restarting = self._loop.create_task(self._restart(proc))

    async def _restart(self, old: subprocess.Popen | None) -> None:
        """Start a new writer (attempts bounded: WRITER_RESTARTS in RESTART_WINDOW, with
        backoff) and send it every batch not acknowledged yet."""
        try:
            if old is not None:
                await asyncio.to_thread(self._reap, old, 1.0)
            while True:
                now = time.monotonic()
                while self._restarts and now - self._restarts[0] > RESTART_WINDOW:
                    self._restarts.popleft()
                if len(self._restarts) >= WRITER_RESTARTS:
                    self.error = (f"the sqlite writer failed {WRITER_RESTARTS} times within {RESTART_WINDOW:g}s; "
                                  "not restarting it (writes are queued, then dropped)")
                    log.error("sqlite store %s: %s", self.path, self.error)
                    return
                await asyncio.sleep(0.1 * 2 ** len(self._restarts))
                self._restarts.append(time.monotonic())
                try:
                    await self._spawn()
                    break
                except StoreError as exc:
                    self.error = f"the sqlite writer cannot restart: {exc}"
                    log.error("sqlite store %s: %s", self.path, self.error)
        finally:
            self._restarting = None
        self.writer_restarts += 1
        self._send_unacked()  # idempotent operations: sending a committed batch again is harmless
        self._flush_soon()

    def _transport_abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _healthy_again(self) -> None:
        if self.error is not None and not self.dropped:
            self.error = None

    def _failed(self, text: str) -> None:
        self.error = text
        log.error("sqlite store %s: %s", self.path, text)

    # Write-behind (hot path: O(1) appends, no SQL) ----------------------------------------
    def _drop(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 10000 == 0:
            log.error("sqlite store %s is not keeping up: %d writes dropped", self.path, self.dropped)
        self.error = f"store overloaded: {self.dropped} writes dropped"

    def _arm(self) -> None:
        """One timer per batch (armed by its first write) or, past FLUSH_OPS, a batch at once."""
        if self._timer is None:
            if self._loop is not None:
                self._timer = self._loop.call_later(FLUSH_INTERVAL, self._flush_now)
        elif len(self._ops) >= FLUSH_OPS:
            self._flush_now()

    # The hot path appends a tuple (no encoding, no I/O): the batch is encoded in bulk, with
    # C-level calls, when it is handed over (sqlite_wire.encode_batch).
    def add_event(self, sid: str, seq: int, data: bytes) -> None:
        if self._queued - self._done >= self._hard:
            self._drop()
            return
        self._ops.append((wire.EVENT, sid, seq, data))
        self._queued += 1
        if self._timer is None or len(self._ops) >= FLUSH_OPS:
            self._arm()

    def add_message(self, sid: str, message: str) -> None:
        if self._queued - self._done >= self._hard:
            self._drop()
            return
        # Numbered when queued, so a batch sent again writes the same row: no duplicates.
        n = self._msg_n.get(sid, 0) + 1
        self._msg_n[sid] = n
        self._ops.append((wire.MESSAGE, sid, n, message.encode()))
        self._queued += 1
        if self._timer is None or len(self._ops) >= FLUSH_OPS:
            self._arm()

    def replace_history(self, sid: str, messages: list[str]) -> None:
        if self._queued - self._done >= self._hard:
            self._drop()
            return
        self._msg_n[sid] = 0
        self._ops.append((wire.CLEAR, sid, 0, wire.NO_BODY))
        self._queued += 1
        self._arm()
        for message in messages:
            self.add_message(sid, message)

    def put_record(self, record: SessionRecord) -> None:
        # Only a session's newest record matters: one per session per batch, encoded at hand-over.
        if record.id in self._records:
            self._records[record.id] = record
            return
        if self._queued - self._done >= self._hard:
            self._drop()
            return
        self._records[record.id] = record
        self._queued += 1
        if self._timer is None:
            self._arm()

    def trim_events(self, sid: str, upto_seq: int) -> None:
        if self._queued - self._done >= self._hard:
            self._drop()
            return
        self._ops.append((wire.TRIM, sid, upto_seq, wire.NO_BODY))
        self._queued += 1
        self._arm()

    def delete(self, sid: str) -> None:
        if self._queued - self._done >= self._hard:
            self._drop()
            return
        self._msg_n.pop(sid, None)
        record = self._records.pop(sid, None)
        if record is not None:  # queued before the delete: it goes first (and is deleted with the rest)
            self._ops.append(_record_op(record))
        self._ops.append((wire.DELETE, sid, 0, wire.NO_BODY))
        self._queued += 1
        self._arm()

    # Token budgets: this node is the only writer of the file, so its cache is the truth once a
    # holder's balance was read; each write carries the total (idempotent, like every operation).
    async def spent(self, key: str, day: str) -> int:
        cached = self._days.get(key, day)
        if cached is not None:
            return cached
        tokens = await asyncio.to_thread(self._read_spent, key, day)
        cached = self._days.get(key, day)  # a spend that ran while we read is newer
        if cached is not None:
            return cached
        self._days.set(key, day, tokens)
        return tokens

    def _read_spent(self, key: str, day: str) -> int:
        if self._read is None:
            raise StoreError("the sqlite store is not started")
        try:
            with self._read_lock:
                return rows.read_spent(self._read, key, day)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read a token balance: {exc}") from None

    async def spend(self, key: str, day: str, tokens: int) -> int:
        total = await self.spent(key, day) + tokens
        self._days.set(key, day, total)
        if self._queued - self._done >= self._hard:
            self._drop()
        else:
            self._ops.append((wire.BUDGET, key, total, day.encode()))
            self._queued += 1
            self._arm()
        return total

    @property
    def pending(self) -> int:
        return max(0, self._queued - self._done)

    # Batches ------------------------------------------------------------------------------
    def _flush_soon(self) -> None:
        if (self._ops or self._records) and self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(FLUSH_INTERVAL, self._flush_now)

    def _flush_now(self, urgent: bool = False) -> None:
        """Close the current batch and hand it to the writer (kept until acknowledged).
        ``urgent``: send one even if empty, and have the writer acknowledge it at once."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ops = self._ops
        if self._records:
            ops.extend(map(_record_op, self._records.values()))
            self._records = {}
        if not ops and not urgent:
            return
        self._ops = []
        self._batch += 1
        payload = wire.encode_batch(ops)
        frame = wire.FRAME_HEAD.pack(len(payload) + 8, self._batch | (wire.URGENT if urgent else 0)) + payload
        self._unacked.append((self._batch, len(ops), frame))
        if self._transport is not None:
            self._transport.write(frame)

    def _send_unacked(self) -> None:
        if self._transport is not None:
            for _, _, frame in self._unacked:
                self._transport.write(frame)

    def _acked(self, batch: int) -> None:
        unacked = self._unacked
        while unacked and unacked[0][0] <= batch:
            self._done += unacked.popleft()[1]
            self.batches += 1
        if self._waiters:
            keep = []
            for target, future in self._waiters:
                if self._done >= target:
                    if not future.done():
                        future.set_result(None)
                else:
                    keep.append((target, future))
            self._waiters = keep

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed; StoreError after ``timeout`` s."""
        if self._loop is None:
            return
        target = self._queued
        if self._done >= target:
            return
        self._flush_now(urgent=True)
        future = self._loop.create_future()
        self._waiters.append((target, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise StoreError(f"sqlite did not take {self.pending} pending writes in {timeout:g}s"
                             + (f" ({self.error})" if self.error else "")) from None

    # Reads --------------------------------------------------------------------------------
    async def load(self, sid: str) -> StoredSession | None:
        await self.flush(LOAD_FLUSH_TIMEOUT)
        found = await asyncio.to_thread(self._load, sid)
        if found is None:
            return None
        stored, top = found
        self._msg_n[sid] = max(self._msg_n.get(sid, 0), top)
        return stored

    def _load(self, sid: str) -> tuple[StoredSession, int] | None:
        if self._read is None:
            raise StoreError("the sqlite store is not started")
        with self._read_lock:
            row = self._read.execute("SELECT record FROM sessions WHERE id = ?", (sid,)).fetchone()
            if row is None:
                return None
            history = rows.read_history(self._read, sid, self.history_limit)
            events = rows.read_events(self._read, sid, self.events_limit)
        stored = StoredSession(SessionRecord.from_dict(orjson.loads(row[0])),
                               [orjson.loads(body) for _, body in history], events)
        return stored, (history[-1][0] if history else 0)

    async def expired(self, idle_before: float, limit: int = 1000) -> list[str]:
        def query() -> list[str]:
            if self._read is None:
                raise StoreError("the sqlite store is not started")
            with self._read_lock:
                return [sid for (sid,) in self._read.execute(
                    "SELECT id FROM sessions WHERE last_active < ? LIMIT ?", (idle_before, limit))]

        return await asyncio.to_thread(query)
