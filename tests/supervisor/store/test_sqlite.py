"""SQLite-only behaviour: the file itself, reopening, failures, a full queue, open_store URLs.

(kill -9 durability is tests/integration/test_durability.py, with a real server process.)
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.supervisor.store.conftest import as_json

from myagent.supervisor.store import MemoryStore, SessionRecord, StoreError, open_store
from myagent.supervisor.store import sqlite_rows as rows
from myagent.supervisor.store.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(20)


def record(sid: str, **kw) -> SessionRecord:
    now = time.time()
    return SessionRecord(sid, "alice", "cd" * 32, "test-agent", now, kw.pop("last_active", now), **kw)


async def test_reopen_after_stop_keeps_everything(tmp_path):
    path = tmp_path / "state" / "sessions.db"  # the directory is created
    store = SQLiteStore(str(path), history_limit=10, events_limit=10)
    await store.start()
    store.put_record(record("s_x", seq=3, turn_id="t2"))
    store.add_message("s_x", as_json({"role": "user", "content": "persist me"}))
    for seq in (1, 2, 3):
        store.add_event("s_x", seq, b'{"seq": %d}' % seq)
    await store.stop()
    assert path.exists()

    # Readable by plain sqlite3 (no hidden state in the process) ...
    with sqlite3.connect(path) as conn:
        assert [seq for seq, _ in rows.read_events(conn, "s_x", 100)] == [1, 2, 3]
    # ... and by a new store on the same file, whose own bounds apply (to what it reads, too).
    again = SQLiteStore(str(path), history_limit=10, events_limit=2)
    await again.start()
    try:
        stored = await again.load("s_x")
        assert stored.record.turn_id == "t2" and stored.record.seq == 3
        assert stored.history == [{"role": "user", "content": "persist me"}]
        assert [s for s, _ in stored.events] == [2, 3]
        again.add_event("s_x", 4, b'{"seq": 4}')
        await again.flush()
        assert [s for s, _ in (await again.load("s_x")).events] == [3, 4]
    finally:
        await again.stop()


async def test_unusable_path_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SQLiteStore(str(blocker / "sessions.db"))
    with pytest.raises(StoreError, match="cannot open"):
        await store.start()


async def test_failed_write_is_reported_then_cleared(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStore(str(path))
    await store.start()
    try:
        store.put_record(record("s_f"))
        await store.flush()
        with sqlite3.connect(path) as side:  # break the schema under the store's feet
            side.execute("DROP TABLE event_chunks")
        store.add_event("s_f", 1, b"{}")
        await store.flush()
        healthy, why = store.health()
        assert not healthy and "sqlite write failed" in why and "event_chunks" in why
        assert store.pending == 0  # the failed batch is accounted for (and logged as lost)
        with sqlite3.connect(path) as side:
            side.executescript(rows.SCHEMA)
        store.add_event("s_f", 2, b"{}")
        await store.flush()
        assert store.health() == (True, "ok")
        assert [s for s, _ in (await store.load("s_f")).events] == [2]
    finally:
        await store.stop()


async def test_full_queue_reports_then_drops(tmp_path):
    store = SQLiteStore(str(tmp_path / "s.db"), max_pending=10)
    # Not started: nothing drains the queue, as if the disk stalled.
    for seq in range(10):
        store.add_event("s_q", seq, b"{}")
    assert store.pending == 10 and store.full
    healthy, why = store.health()
    assert not healthy and "full" in why
    for seq in range(10, 200):
        store.add_event("s_q", seq, b"{}")
    assert store.pending == 100 and store.dropped == 100  # past 10 x max_pending: dropped, counted
    assert "dropped" in store.health()[1]
    await store.start()
    try:
        await store.flush()
        assert store.pending == 0
        assert "100 writes dropped" in store.health()[1]  # a loss stays visible
    finally:
        await store.stop()


async def test_pending_is_exact_under_load(tmp_path):
    """The queue length is kept by two single-writer counters: it ends at exactly 0."""
    store = SQLiteStore(str(tmp_path / "s.db"), events_limit=1_000_000)
    await store.start()
    try:
        for round_ in range(5):
            for seq in range(20_000):
                store.add_event("s_p", round_ * 20_000 + seq, b"{}")
            assert store.pending >= 0
        await store.flush()
        assert store.pending == 0
    finally:
        await store.stop()


def test_open_store_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("MYAGENT_WS_STATE_DIR", str(tmp_path / "state"))
    default = open_store("sqlite://")
    assert isinstance(default, SQLiteStore) and default.path == str(tmp_path / "state" / "sessions.db")
    absolute = open_store(f"sqlite://{tmp_path}/x.db", history_limit=7, events_limit=9)
    assert absolute.path == str(tmp_path / "x.db")
    assert (absolute.history_limit, absolute.events_limit) == (7, 9)
    memory = open_store("memory:")
    assert isinstance(memory, MemoryStore) and not memory.durable
    with pytest.raises(ValueError, match="unknown --store"):
        open_store("postgres://x")


# The writer process ------------------------------------------------------------------------

def _event_seqs(path) -> list[int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [seq for seq, _ in rows.read_events(conn, "s_k", 10**9)]


async def test_a_killed_writer_is_restarted_and_loses_nothing(tmp_path):
    """kill -9 of the writer process: batches it had not acknowledged are sent again to a new one."""
    import os
    import signal

    import psutil

    store = SQLiteStore(str(tmp_path / "s.db"), events_limit=10_000)
    await store.start()
    try:
        store.put_record(record("s_k"))
        for seq in range(1, 501):
            store.add_event("s_k", seq, b'{"seq": %d}' % seq)
        await store.flush()
        first = store.writer_pid
        os.kill(first, signal.SIGKILL)
        for seq in range(501, 1001):  # queued while the writer is dead or being replaced
            store.add_event("s_k", seq, b'{"seq": %d}' % seq)
        await store.flush()
        assert store.writer_pid != first and store.writer_restarts == 1
        assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
        assert [s for s, _ in (await store.load("s_k")).events] == list(range(1, 1001))
        assert store.health() == (True, "ok")
    finally:
        await store.stop()


FRONT_THAT_DIES = """
import asyncio, os, signal, sys
from myagent.supervisor.store import sqlite_rows as rows
from myagent.supervisor.store.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1], events_limit=100_000)
    await store.start()
    for seq in range(1, 20_001):
        store.add_event("s_k", seq, b'{"seq": %d, "pad": "%s"}' % (seq, b"x" * 200))
        if seq % 500 == 0:
            store._flush_now()  # one batch handed over
    # Handed over = in the kernel's socket buffer, not in the transport's own (that dies with us).
    while store._transport.get_write_buffer_size():
        await asyncio.sleep(0.001)
    print(store.writer_pid, store.pending, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_a_killed_front_loses_nothing_it_handed_over(tmp_path):
    """kill -9 of the front process right after handing a batch over: the writer outlives it,
    commits everything it was sent, then exits at end of stream."""
    import subprocess
    import sys

    import psutil

    from tests.serverproc import ROOT

    path = tmp_path / "s.db"
    child = subprocess.run([sys.executable, "-c", FRONT_THAT_DIES, str(path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=30)
    assert child.returncode == -9, child.stderr
    writer_pid, pending = (int(x) for x in child.stdout.split())
    print(f"{pending} writes not acknowledged when the front died")  # usually thousands
    try:
        psutil.Process(writer_pid).wait(15)  # the writer exits by itself once it has committed all
    except psutil.NoSuchProcess:
        pass
    assert _event_seqs(path) == list(range(1, 20_001))


async def test_one_writer_per_file(tmp_path):
    """A second store on the same file waits for the first one's writer (a server restarted after
    a kill -9 must see everything the old writer commits); two live servers never share a file."""
    path = str(tmp_path / "s.db")
    first = SQLiteStore(path)
    await first.start()
    second = SQLiteStore(path, lock_wait=0.3)
    try:
        with pytest.raises(StoreError, match="another myagent-ws server"):
            await second.start()
        await first.stop()
        await second.start()
        second.add_event("s_k", 1, b"{}")
        await second.flush()
        assert _event_seqs(path) == [1]
    finally:
        await second.stop()
        await first.stop()


async def test_events_are_stored_in_chunks_and_trimmed_exactly(tmp_path):
    """A batch's consecutive events of a session are one row; a trim through a chunk keeps exactly
    the events after it; a batch applied twice (a resend) changes nothing."""
    path = tmp_path / "s.db"
    store = SQLiteStore(str(path), events_limit=10_000)
    await store.start()
    try:
        store.put_record(record("s_c"))
        for seq in range(1, 11):
            store.add_event("s_c", seq, b'{"seq": %d}' % seq)
        store._flush_now()
        frame = store._unacked[-1][2]
        await store.flush()
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            assert conn.execute("SELECT first, last FROM event_chunks").fetchall() == [(1, 10)]
        store.trim_events("s_c", 4)
        await store.flush()
        assert [s for s, _ in (await store.load("s_c")).events] == list(range(5, 11))
        store._transport.write(frame)  # the first batch again, as after a writer restart
        store.add_event("s_c", 11, b'{"seq": 11}')  # flushed after it: flush() waits for both
        await store.flush()
        events = (await store.load("s_c")).events
        assert [s for s, _ in events] == list(range(1, 12))  # rewritten, each event once
        assert events[0][1] == b'{"seq": 1}'
    finally:
        await store.stop()


async def test_bounds_hold_with_slack_over_many_writes(tmp_path):
    """The writer deletes old rows in ranges (with slack); reads always see exactly the newest
    events_limit events and history_limit messages, and the file stays bounded."""
    path = tmp_path / "s.db"
    store = SQLiteStore(str(path), events_limit=40, history_limit=20)
    await store.start()
    try:
        store.put_record(record("s_k"))
        for seq in range(1, 1001):
            store.add_event("s_k", seq, b'{"seq": %d}' % seq)
            store.add_message("s_k", as_json({"role": "user", "content": f"m{seq}"}))
            if seq % 97 == 0:
                await store.flush()
        await store.flush()
        stored = await store.load("s_k")
        assert [s for s, _ in stored.events] == list(range(961, 1001))
        assert [m["content"] for m in stored.history] == [f"m{n}" for n in range(981, 1001)]
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            stored = sum(last - first + 1 for first, last in conn.execute("SELECT first, last FROM event_chunks"))
            assert stored <= 40 + 16 + 97
            assert conn.execute("SELECT count(*) FROM history").fetchone()[0] <= 20 + 16 + 97
    finally:
        await store.stop()


async def test_files_of_the_old_schema_are_migrated(tmp_path):
    """Files written before the writer process numbered history rows globally (renumbered per
    session, in order) and kept one row per event (moved into chunks), on first start."""
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE sessions (id TEXT PRIMARY KEY, record BLOB NOT NULL, last_active REAL NOT NULL);
            CREATE TABLE messages (n INTEGER PRIMARY KEY AUTOINCREMENT, sid TEXT NOT NULL, body BLOB NOT NULL);
            CREATE TABLE events (sid TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,
                                 PRIMARY KEY (sid, seq)) WITHOUT ROWID;
        """)
        rec = record("s_m")
        conn.execute("INSERT INTO sessions VALUES (?, ?, ?)", ("s_m", orjson_dumps(rec.to_dict()), rec.last_active))
        for i, sid in enumerate(["s_m", "s_other", "s_m", "s_m"]):
            conn.execute("INSERT INTO messages (sid, body) VALUES (?, ?)",
                         (sid, as_json({"role": "user", "content": f"m{i}"}).encode()))
        for seq in (3, 4, 5):
            conn.execute("INSERT INTO events VALUES (?, ?, ?)", ("s_m", seq, b'{"seq": %d}' % seq))
    store = SQLiteStore(str(path))
    await store.start()
    try:
        stored = await store.load("s_m")
        assert [m["content"] for m in stored.history] == ["m0", "m2", "m3"]
        assert stored.events == [(seq, b'{"seq": %d}' % seq) for seq in (3, 4, 5)]
        store.add_event("s_m", 6, b"{}")
        store.trim_events("s_m", 4)
        store.add_message("s_m", as_json({"role": "user", "content": "m4"}))  # numbered after the migrated ones
        await store.flush()
        again = await store.load("s_m")
        assert [m["content"] for m in again.history] == ["m0", "m2", "m3", "m4"]
        assert [seq for seq, _ in again.events] == [5, 6]
    finally:
        await store.stop()
    with sqlite3.connect(path) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "messages" not in names and "events" not in names


def orjson_dumps(doc: dict) -> bytes:
    import orjson

    return orjson.dumps(doc)


def test_the_writer_runs_isolated(tmp_path):
    """Stdlib only, in an isolated interpreter: the writer imports nothing of the package (its
    start costs an interpreter, not the server's imports) and gets no secret from the environment."""
    import ast
    from pathlib import Path

    from myagent.supervisor.store import sqlite_writer

    tree = ast.parse(Path(sqlite_writer.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module}
    assert "myagent" not in imported and "orjson" not in imported
