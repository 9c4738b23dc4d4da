"""Behaviour every durable store must have, checked on SQLite (a temp file) and Redis (a real server).

Write-behind (the hot-path methods only queue), then flush, then load returns exactly
what was written; bounds; trim; delete; expired(); concurrent writers and flushes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import AsyncIterator

import orjson
import pytest

from tests.supervisor.store.conftest import as_json

from myagent.supervisor.store import SessionRecord, SessionStore, open_store

pytestmark = pytest.mark.timeout(20)

_prefixes = itertools.count(1)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/sessions.db"
    pytest.importorskip("redis", reason="the redis package is not installed (pip install 'redis>=5')")
    server = request.getfixturevalue("redis_server")
    # One key namespace per test: the module's Redis is shared.
    return f"{server.url}?prefix=t{next(_prefixes)}"


@pytest.fixture
async def make_store(store_url) -> AsyncIterator:
    stores: list[SessionStore] = []

    async def make(**limits) -> SessionStore:
        store = open_store(store_url, **limits)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.stop()


def record(sid: str, *, last_active: float | None = None, seq: int = 0, turn_id: str | None = None,
           owner: str = "alice") -> SessionRecord:
    now = time.time()
    return SessionRecord(sid, owner, "ab" * 32, "test-agent", now - 5, now if last_active is None else last_active,
                         seq, turn_id)


def event(sid: str, seq: int, text: str = "x") -> bytes:
    return orjson.dumps({"event": "agent.partial_answer", "session_id": sid, "seq": seq, "content": text})


async def test_write_behind_then_flush_then_load(make_store):
    store = await make_store()
    rec = record("s_a", seq=3, turn_id="t7")
    store.put_record(rec)
    messages = [{"role": "user", "content": "héllo 北京"}, {"role": "assistant", "content": "hi", "tool_calls": []},
                {"role": "tool", "content": "x" * 5000, "tool_call_id": "c1"}]
    for message in messages:
        store.add_message("s_a", as_json(message))
    events = [(seq, event("s_a", seq, f"part {seq}")) for seq in range(1, 4)]
    for seq, data in events:
        store.add_event("s_a", seq, data)
    # Queued, not written yet from the caller's point of view: the calls returned at once.
    await store.flush()
    assert store.pending == 0
    stored = await store.load("s_a")
    assert stored is not None
    assert stored.record == rec
    assert stored.history == messages
    assert stored.events == events
    assert all(isinstance(data, bytes) for _, data in stored.events)
    assert await store.load("s_unknown") is None
    assert store.health() == (True, "ok")


async def test_sessions_do_not_mix(make_store):
    store = await make_store()
    for sid in ("s_1", "s_2"):
        store.put_record(record(sid))
        store.add_message(sid, as_json({"role": "user", "content": sid}))
        store.add_event(sid, 1, event(sid, 1))
    await store.flush()
    for sid in ("s_1", "s_2"):
        stored = await store.load(sid)
        assert stored.history == [{"role": "user", "content": sid}]
        assert stored.events == [(1, event(sid, 1))]
        assert stored.record.id == sid


async def test_record_is_replaced(make_store):
    store = await make_store()
    store.put_record(record("s_r", seq=4, turn_id="t1"))
    store.put_record(record("s_r", seq=9, turn_id=None))
    await store.flush()
    stored = await store.load("s_r")
    assert stored.record.seq == 9 and stored.record.turn_id is None


async def test_identical_messages_are_all_kept(make_store):
    store = await make_store()
    store.put_record(record("s_d"))
    for _ in range(3):
        store.add_message("s_d", as_json({"role": "user", "content": "again"}))
    await store.flush()
    assert (await store.load("s_d")).history == [{"role": "user", "content": "again"}] * 3


async def test_replace_history(make_store):
    """A rolled-back turn: the stored history becomes exactly the given messages, in order with
    the writes queued before and after the replacement (all write-behind, one flush)."""
    store = await make_store(history_limit=5)
    store.put_record(record("s_h"))
    store.put_record(record("s_other"))
    for i in range(4):
        store.add_message("s_h", as_json({"role": "user", "content": f"old {i}"}))
    store.add_message("s_other", as_json({"role": "user", "content": "untouched"}))
    kept = [as_json({"role": "user", "content": "old 0"}), as_json({"role": "assistant", "content": "kept é"})]
    store.replace_history("s_h", kept)
    store.add_message("s_h", as_json({"role": "user", "content": "after"}))
    await store.flush()
    assert [m["content"] for m in (await store.load("s_h")).history] == ["old 0", "kept é", "after"]
    assert [m["content"] for m in (await store.load("s_other")).history] == ["untouched"]
    # Emptied, then bounded as usual from there on.
    store.replace_history("s_h", [])
    await store.flush()
    assert (await store.load("s_h")).history == []
    for i in range(8):
        store.add_message("s_h", as_json({"role": "user", "content": f"new {i}"}))
    await store.flush()
    assert [m["content"] for m in (await store.load("s_h")).history] == [f"new {i}" for i in range(3, 8)]


async def test_memory_store_accepts_replace_history():
    from myagent.supervisor.store import MemoryStore

    MemoryStore().replace_history("s_x", [as_json({"role": "user", "content": "x"})])


async def test_bounds_keep_the_newest(make_store):
    store = await make_store(history_limit=5, events_limit=7)
    store.put_record(record("s_b"))
    for i in range(12):  # over several batches too: flush halfway
        store.add_message("s_b", as_json({"role": "user", "content": f"m{i}"}))
        store.add_event("s_b", i + 1, event("s_b", i + 1))
        if i == 5:
            await store.flush()
    await store.flush()
    stored = await store.load("s_b")
    assert [m["content"] for m in stored.history] == [f"m{i}" for i in range(7, 12)]
    assert [seq for seq, _ in stored.events] == list(range(6, 13))


async def test_trim_events(make_store):
    store = await make_store()
    store.put_record(record("s_t"))
    for seq in range(1, 11):
        store.add_event("s_t", seq, event("s_t", seq))
    store.trim_events("s_t", 6)
    await store.flush()
    assert [seq for seq, _ in (await store.load("s_t")).events] == [7, 8, 9, 10]
    store.trim_events("s_t", 100)
    store.add_event("s_t", 11, event("s_t", 11))  # written after the trim: kept
    await store.flush()
    assert [seq for seq, _ in (await store.load("s_t")).events] == [11]


async def test_delete(make_store):
    store = await make_store()
    for sid in ("s_keep", "s_gone"):
        store.put_record(record(sid, last_active=100.0))
        store.add_message(sid, as_json({"role": "user", "content": "x"}))
        store.add_event(sid, 1, event(sid, 1))
    store.delete("s_gone")
    await store.flush()
    assert await store.load("s_gone") is None
    assert await store.load("s_keep") is not None
    assert await store.expired(time.time()) == ["s_keep"]
    # A deleted session's id can be written again from scratch.
    store.put_record(record("s_gone"))
    store.add_message("s_gone", as_json({"role": "user", "content": "new"}))
    await store.flush()
    stored = await store.load("s_gone")
    assert stored.history == [{"role": "user", "content": "new"}] and stored.events == []


async def test_expired(make_store):
    store = await make_store()
    now = time.time()
    store.put_record(record("s_old1", last_active=now - 1000))
    store.put_record(record("s_old2", last_active=now - 700))
    store.put_record(record("s_new", last_active=now - 10))
    await store.flush()
    assert sorted(await store.expired(now - 600)) == ["s_old1", "s_old2"]
    assert await store.expired(now - 800) == ["s_old1"]
    assert len(await store.expired(now - 600, limit=1)) == 1
    assert sorted(await store.expired(now)) == ["s_new", "s_old1", "s_old2"]
    # Activity (a new record) takes a session off the list.
    store.put_record(record("s_old1", last_active=now))
    await store.flush()
    assert await store.expired(now - 600) == ["s_old2"]


async def test_concurrent_writers_and_flushes(make_store):
    store = await make_store()

    async def writer(n: int) -> None:
        sid = f"s_c{n}"
        store.put_record(record(sid, seq=50))
        for seq in range(1, 51):
            store.add_event(sid, seq, event(sid, seq))
            store.add_message(sid, as_json({"role": "user", "content": f"{n}:{seq}"}))
            if seq % 10 == 0:
                await store.flush()  # many flushes in flight at once, interleaved with writes
            if seq % 7 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(writer(n) for n in range(20)))
    await store.flush()
    assert store.pending == 0
    for n in range(20):
        stored = await store.load(f"s_c{n}")
        assert [seq for seq, _ in stored.events] == list(range(1, 51))
        assert [m["content"] for m in stored.history] == [f"{n}:{seq}" for seq in range(1, 51)]


async def test_hot_path_only_queues(make_store):
    """20k writes return without waiting for the backend: the event loop is never blocked on I/O."""
    store = await make_store(events_limit=100_000)
    store.put_record(record("s_hot"))
    started = time.perf_counter()
    for seq in range(1, 20_001):
        store.add_event("s_hot", seq, event("s_hot", seq))
    elapsed = time.perf_counter() - started
    assert store.pending > 0
    assert elapsed < 2.0, f"20k queued writes took {elapsed:.2f}s"
    await store.flush()
    stored = await store.load("s_hot")
    assert len(stored.events) == 20_000 and stored.events[-1][0] == 20_000


async def test_stop_flushes_pending_writes(make_store, store_url):
    store = await make_store()
    store.put_record(record("s_stop", seq=2))
    store.add_message("s_stop", as_json({"role": "user", "content": "last words"}))
    store.add_event("s_stop", 2, event("s_stop", 2))
    await store.stop()  # no flush() first
    again = await make_store()
    stored = await again.load("s_stop")
    assert stored is not None and stored.history == [{"role": "user", "content": "last words"}]
    assert stored.events == [(2, event("s_stop", 2))]


# Token budgets -----------------------------------------------------------------------------

async def test_budget_balances_add_up_and_survive_a_reopen(make_store):
    store = await make_store()
    assert await store.spent("token:abc", "2026-12-02") == 0
    assert await store.spend("token:abc", "2026-12-02", 120) == 120
    assert await store.spend("token:abc", "2026-12-02", 30) == 150
    assert await store.spent("token:abc", "2026-12-02") == 150
    assert await store.spent("token:abc", "2026-12-03") == 0  # a new UTC day starts from zero
    assert await store.spent("session:s_x", "2026-12-02") == 0  # holders do not share
    await store.stop()
    again = await make_store()
    assert await again.spent("token:abc", "2026-12-02") == 150


async def test_a_record_keeps_the_session_usage_totals(make_store):
    store = await make_store()
    rec = record("s_u")
    rec.usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "turns": 1}
    store.put_record(rec)
    await store.flush()
    stored = await store.load("s_u")
    assert stored is not None and stored.record.usage == rec.usage
