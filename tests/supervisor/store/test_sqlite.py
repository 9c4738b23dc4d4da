"""SQLite-only behaviour: the file itself, reopening, failures, a full queue, open_store URLs.

(kill -9 durability is tests/integration/test_durability.py, with a real server process.)
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.supervisor.store.conftest import as_json

from myagent.supervisor.store import MemoryStore, SessionRecord, StoreError, open_store
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
        assert conn.execute("SELECT count(*) FROM events WHERE sid = 's_x'").fetchone() == (3,)
    # ... and by a new store on the same file, with the same bounds applied from then on.
    again = SQLiteStore(str(path), history_limit=10, events_limit=2)
    await again.start()
    try:
        stored = await again.load("s_x")
        assert stored.record.turn_id == "t2" and stored.record.seq == 3
        assert stored.history == [{"role": "user", "content": "persist me"}]
        assert [s for s, _ in stored.events] == [1, 2, 3]
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
            side.execute("DROP TABLE events")
        store.add_event("s_f", 1, b"{}")
        await store.flush()
        healthy, why = store.health()
        assert not healthy and "sqlite write failed" in why and "events" in why
        assert store.pending == 0  # the failed batch is accounted for (and logged as lost)
        with sqlite3.connect(path) as side:
            side.execute("CREATE TABLE events (sid TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL, "
                         "PRIMARY KEY (sid, seq)) WITHOUT ROWID")
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
