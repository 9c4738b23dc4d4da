"""The SQLite store's tables: schema, migrations, writing batches, reading a session back.

Stdlib only (the writer process loads it by path in an isolated interpreter). Tables:

=================  ==========================================================================
``sessions``       id, the SessionRecord as JSON, last_active (indexed: expired())
``history``        (sid, n) -> one message as JSON; n numbers a session's messages from 1
``event_chunks``   (sid, first) -> last, body: the encoded events first..last of a session,
                   each prefixed with its length (``>I``); one row per session per batch
``budgets``        (holder, day) -> tokens spent that UTC day; one row per holder (older days
                   are deleted when a newer one is written)
=================  ==========================================================================

Why chunks: SQLite's cost is per row (a B-tree insert, pages dirtied). A turn sends about a
dozen events; one row each made the writer spend more CPU than the front. A batch's events
of one session are consecutive, so they become one row. Chunk boundaries depend only on the
batch's content, so a batch applied twice writes the same rows again (REPLACE): idempotent.

Bounds: a session keeps its newest ``events_limit`` events and ``history_limit`` messages.
Old rows are deleted in ranges once ``limit // 8`` (at least 16) past the bound; reads return
exactly the newest ``limit``. A trim (the client acknowledged up to a seq) is exact: the
chunk it cuts through is rewritten.
"""

from __future__ import annotations

import sqlite3
import struct
from typing import Iterable, Iterator

# Rowid tables with a unique key index, not WITHOUT ROWID: a WITHOUT ROWID table is one
# index b-tree, which spills any row over ~1 KB (4 KiB pages) into overflow pages; chunks of a
# dozen events and tool results are larger. Measured: the writer's CPU per turn 163 -> 85 µs.
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record BLOB NOT NULL, last_active REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_last_active ON sessions (last_active);
CREATE TABLE IF NOT EXISTS history (sid TEXT NOT NULL, n INTEGER NOT NULL, body BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS history_key ON history (sid, n);
CREATE TABLE IF NOT EXISTS event_chunks (sid TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
                                         body BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS event_chunks_key ON event_chunks (sid, first);
CREATE TABLE IF NOT EXISTS budgets (holder TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL,
                                    PRIMARY KEY (holder, day));
"""
# Files written before the writer process: history rows numbered by one global AUTOINCREMENT
# column (a batch sent twice would have doubled them) and one row per event.
MIGRATE_MESSAGES = """
INSERT OR IGNORE INTO history (sid, n, body)
    SELECT sid, ROW_NUMBER() OVER (PARTITION BY sid ORDER BY n), body FROM messages;
DROP TABLE messages;
"""
_LENGTH = struct.Struct(">I")

__all__ = ["Applier", "SCHEMA", "decode_chunk", "encode_chunk", "migrate", "read_events", "read_history",
           "read_spent"]


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a file of an earlier version to this schema (idempotent; one transaction each)."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "messages" in tables:
        conn.executescript("BEGIN;" + MIGRATE_MESSAGES + "COMMIT;")
    if "events" in tables:
        conn.execute("BEGIN")
        rows = conn.execute("SELECT sid, seq, body FROM events ORDER BY sid, seq")
        conn.executemany("INSERT OR REPLACE INTO event_chunks (sid, first, last, body) VALUES (?, ?, ?, ?)",
                         ((sid, seq, seq, encode_chunk([bytes(body)])) for sid, seq, body in rows))
        conn.execute("DROP TABLE events")
        conn.execute("COMMIT")


def encode_chunk(bodies: Iterable[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(body)) + body for body in bodies)


def decode_chunk(first: int, body: bytes) -> Iterator[tuple[int, bytes]]:
    """(seq, event) for each event of a chunk that starts at ``first``."""
    pos, seq, size = 0, first, len(body)
    while pos < size:
        (length,) = _LENGTH.unpack_from(body, pos)
        yield seq, bytes(body[pos + 4:pos + 4 + length])
        pos += 4 + length
        seq += 1


def read_events(conn: sqlite3.Connection, sid: str, limit: int) -> list[tuple[int, bytes]]:
    """The newest ``limit`` events of ``sid``, oldest first."""
    events: dict[int, bytes] = {}  # by seq: should a chunk ever overlap another, the newer row wins
    for first, body in conn.execute("SELECT first, body FROM event_chunks WHERE sid = ? ORDER BY first", (sid,)):
        events.update(decode_chunk(first, body))
    return sorted(events.items())[-limit:] if limit else []


def read_history(conn: sqlite3.Connection, sid: str, limit: int) -> list[tuple[int, bytes]]:
    """The newest ``limit`` (n, message) of ``sid``, oldest first."""
    rows = conn.execute("SELECT n, body FROM history WHERE sid = ? ORDER BY n DESC LIMIT ?", (sid, limit))
    return [(n, bytes(body)) for n, body in rows.fetchall()[::-1]]


def read_spent(conn: sqlite3.Connection, holder: str, day: str) -> int:
    """Tokens ``holder`` spent on ``day`` (0 if none recorded)."""
    row = conn.execute("SELECT tokens FROM budgets WHERE holder = ? AND day = ?", (holder, day)).fetchone()
    return int(row[0]) if row else 0


class Applier:
    """Applies decoded batches (sqlite_wire.operations): one transaction for all of them,
    executemany per table, bounds at the end."""

    def __init__(self, conn: sqlite3.Connection, events_limit: int, history_limit: int) -> None:
        self.conn = conn
        self.events_limit = events_limit
        self.history_limit = history_limit
        self.events_slack = max(16, events_limit // 8)
        self.history_slack = max(16, history_limit // 8)
        self.cut_seq: dict[str, int] = {}  # sid -> events deleted up to this seq (by this process)
        self.cut_n: dict[str, int] = {}    # sid -> history deleted up to this n

    def apply(self, batches: Iterable[Iterable[tuple]]) -> None:
        conn = self.conn
        chunks: list[tuple] = []
        messages: list[tuple] = []
        records: dict[str, tuple] = {}  # the newest record of each session wins
        budgets: dict[str, tuple] = {}  # the newest balance of each holder wins
        top_seq: dict[str, int] = {}
        top_n: dict[str, int] = {}
        run: dict[str, list] = {}  # sid -> [first, last, [bodies]]: this batch's consecutive events

        def close_runs() -> None:
            for sid, (first, last, bodies) in run.items():
                chunks.append((sid, first, last, encode_chunk(bodies)))
            run.clear()

        def write_pending() -> None:
            # Rows of different tables commute; a trim/delete/clear must see what came before it.
            close_runs()
            if chunks:
                conn.executemany("INSERT OR REPLACE INTO event_chunks (sid, first, last, body) VALUES (?, ?, ?, ?)",
                                 chunks)
                chunks.clear()
            if messages:
                conn.executemany("INSERT OR REPLACE INTO history (sid, n, body) VALUES (?, ?, ?)", messages)
                messages.clear()
            if records:
                conn.executemany("INSERT OR REPLACE INTO sessions (id, record, last_active) VALUES (?, ?, ?)",
                                 records.values())
                records.clear()
            if budgets:
                conn.executemany("INSERT OR REPLACE INTO budgets (holder, day, tokens) VALUES (?, ?, ?)",
                                 budgets.values())
                conn.executemany("DELETE FROM budgets WHERE holder = ? AND day < ?",
                                 [(holder, day) for holder, day, _ in budgets.values()])
                budgets.clear()

        conn.execute("BEGIN")
        try:
            for batch in batches:
                for op in batch:
                    kind, sid = op[0], op[1]
                    if kind == "E":
                        seq = op[2]
                        current = run.get(sid)
                        if current is not None and seq == current[1] + 1:
                            current[1] = seq
                            current[2].append(op[3])
                        else:
                            if current is not None:  # a gap (never in practice): a chunk of its own
                                chunks.append((sid, current[0], current[1], encode_chunk(current[2])))
                            run[sid] = [seq, seq, [op[3]]]
                        if seq > top_seq.get(sid, 0):
                            top_seq[sid] = seq
                    elif kind == "M":
                        messages.append(op[1:])
                        if op[2] > top_n.get(sid, 0):
                            top_n[sid] = op[2]
                    elif kind == "R":
                        records[sid] = (sid, op[3], op[2])
                    elif kind == "B":
                        day = op[3].decode()
                        if sid not in budgets or budgets[sid][1] <= day:
                            budgets[sid] = (sid, day, op[2])
                    else:
                        write_pending()
                        self._apply_other(kind, sid, op, top_seq, top_n)
                close_runs()  # chunks end with their batch: a batch sent again writes the same rows
            write_pending()
            cut_events = self._cuts(top_seq, self.cut_seq, self.events_limit, self.events_slack)
            if cut_events:
                conn.executemany("DELETE FROM event_chunks WHERE sid = ? AND last <= ?", cut_events)
            cut_history = self._cuts(top_n, self.cut_n, self.history_limit, self.history_slack)
            if cut_history:
                conn.executemany("DELETE FROM history WHERE sid = ? AND n <= ?", cut_history)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            # What this transaction would have deleted is not deleted: forget those cuts.
            self.cut_seq.clear()
            self.cut_n.clear()
            raise

    def _apply_other(self, kind: str, sid: str, op: tuple, top_seq: dict, top_n: dict) -> None:
        conn = self.conn
        if kind == "T":
            self._trim(sid, op[2])
        elif kind == "C":
            conn.execute("DELETE FROM history WHERE sid = ?", (sid,))
            top_n.pop(sid, None)
            self.cut_n.pop(sid, None)  # numbering starts again at 1
        elif kind == "D":
            for table, column in (("sessions", "id"), ("history", "sid"), ("event_chunks", "sid")):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (sid,))
            conn.execute("DELETE FROM budgets WHERE holder = ?", (f"session:{sid}",))  # its own balance
            top_seq.pop(sid, None)
            top_n.pop(sid, None)
            self.cut_seq.pop(sid, None)
            self.cut_n.pop(sid, None)

    def _trim(self, sid: str, upto: int) -> None:
        """Delete the session's events up to ``upto``, exactly: the chunk cut through is rewritten."""
        conn = self.conn
        conn.execute("DELETE FROM event_chunks WHERE sid = ? AND last <= ?", (sid, upto))
        row = conn.execute("SELECT first, body FROM event_chunks WHERE sid = ? AND first <= ? AND last > ?",
                           (sid, upto, upto)).fetchone()
        if row is not None:
            first, body = row
            kept = [(seq, event) for seq, event in decode_chunk(first, body) if seq > upto]
            conn.execute("DELETE FROM event_chunks WHERE sid = ? AND first = ?", (sid, first))
            conn.execute("INSERT OR REPLACE INTO event_chunks (sid, first, last, body) VALUES (?, ?, ?, ?)",
                         (sid, kept[0][0], kept[-1][0], encode_chunk(event for _, event in kept)))

    @staticmethod
    def _cuts(tops: dict[str, int], done: dict[str, int], limit: int, slack: int) -> list[tuple[str, int]]:
        cuts = []
        for sid, top in tops.items():
            cut = top - limit
            if cut >= done.get(sid, 0) + slack:
                cuts.append((sid, cut))
                done[sid] = cut
        return cuts
