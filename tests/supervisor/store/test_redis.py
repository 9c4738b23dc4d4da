"""Redis-only behaviour against a real redis-server: key layout, leases, a Redis that is down or full.

(The behaviours shared with SQLite are in test_contract.py.)
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.supervisor.store.conftest import as_json

from myagent.supervisor.store import SessionRecord, StoreError, open_store
from tests.supervisor.store.redisproc import free_port

pytest.importorskip("redis", reason="the redis package is not installed (pip install 'redis>=5')")
from myagent.supervisor.store.redis import RedisStore  # noqa: E402

pytestmark = pytest.mark.timeout(20)

_prefixes = itertools.count(1)


def record(sid: str, **kw) -> SessionRecord:
    now = time.time()
    return SessionRecord(sid, "alice", "ef" * 32, "test-agent", now, kw.pop("last_active", now), **kw)


@pytest.fixture
async def stores(redis_server):
    """``await make()``: RedisStores on the module's server sharing one fresh key prefix (like nodes)."""
    prefix = f"r{next(_prefixes)}"
    made: list[RedisStore] = []

    async def make(url: str | None = None, **limits) -> RedisStore:
        store = open_store(url or f"{redis_server.url}?prefix={prefix}", **limits)
        await store.start()
        made.append(store)
        return store

    make.prefix = prefix  # type: ignore[attr-defined]
    yield make
    for store in made:
        await store.stop()


def crash(store: RedisStore) -> None:
    """Stop a store's background work without releasing anything: a node killed with -9."""
    for task in (store._task, store._keeper_task):
        if task is not None:
            task.cancel()
    store._task = store._keeper_task = None


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_key_layout(stores, redis_server):
    store = await stores()
    p = stores.prefix
    store.put_record(record("s_k", last_active=1234.5))
    store.add_message("s_k", as_json({"role": "user", "content": "hi"}))
    store.add_event("s_k", 1, b'{"seq":1}')
    assert await store.acquire("s_k", "node-a", 5)
    await store.flush()
    assert redis_server.command("TYPE", f"{p}:s_k:rec") == b"+string\r\n"
    assert redis_server.command("TYPE", f"{p}:s_k:hist") == b"+zset\r\n"
    assert redis_server.command("TYPE", f"{p}:s_k:ev") == b"+zset\r\n"
    assert redis_server.command("GET", f"{p}:s_k:lease") == b"$6\r\nnode-a\r\n"
    pttl = int(redis_server.command("PTTL", f"{p}:s_k:lease")[1:])
    assert 3000 < pttl <= 5000
    assert redis_server.command("ZSCORE", f"{p}:sessions", "s_k").splitlines()[1] == b"1234.5"
    assert store.describe() == f"redis://127.0.0.1:{redis_server.port}/0 (prefix {p})"


def test_describe_hides_the_password():
    store = RedisStore("redis://user:s3cret@10.0.0.9:6380/2")
    assert store.describe() == "redis://10.0.0.9:6380/2"
    assert "s3cret" not in store.describe()


async def test_redis_down_at_start_is_a_store_error():
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreError, match="cannot reach redis"):
        await store.start()


async def test_lease_lifecycle(stores):
    a = await stores()
    b = await stores()
    assert await a.acquire("s_l", "A", 0.6)
    assert await a.acquire("s_l", "A", 0.6)  # already ours: granted again
    assert not await b.acquire("s_l", "B", 0.6)
    assert await b.lease_owner("s_l") == "A"
    await b.renew(["s_l"], "B", 30)  # B renews only leases it holds: A's is untouched
    assert await b.lease_owner("s_l") == "A"
    # A renews (its keeper does too, every ttl/3): past several ttls it still holds the lease.
    for _ in range(4):
        await asyncio.sleep(0.3)
        assert await a.renew(["s_l"], "A", 0.6) == []
        assert not await b.acquire("s_l", "B", 0.6)
    # Release only by the owner.
    await b.release("s_l", "B")
    assert await a.lease_owner("s_l") == "A"
    await a.release("s_l", "A")
    assert await a.lease_owner("s_l") is None
    assert await b.acquire("s_l", "B", 0.6)


async def test_lease_expires_when_its_node_dies(stores):
    a = await stores()
    b = await stores()
    assert await a.acquire("s_e", "A", 0.5)
    await asyncio.sleep(0.8)
    assert not await b.acquire("s_e", "B", 0.5), "A's keeper should have renewed the lease"
    crash(a)  # kill -9: nobody renews, nobody releases
    started = time.monotonic()
    while not await b.acquire("s_e", "B", 0.5):
        assert time.monotonic() - started < 2.0, "the lease did not expire"
        await asyncio.sleep(0.05)
    assert time.monotonic() - started >= 0.2  # it lasted (most of) its ttl after the last renewal
    assert await b.lease_owner("s_e") == "B"


async def test_stop_releases_held_leases(stores):
    a = await stores()
    b = await stores()
    assert await a.acquire("s_s", "A", 30)
    await a.stop()  # graceful: another node may take the session over at once
    assert await b.acquire("s_s", "B", 30)


async def test_renew_reports_a_lease_another_node_took(stores):
    a = await stores()
    b = await stores()
    crash(a)  # A stalls: nobody renews its lease ...
    assert await a.acquire("s_t", "A", 0.2)
    await asyncio.sleep(0.4)
    assert await b.acquire("s_t", "B", 5)  # ... so B takes the session over
    assert await a.renew(["s_t"], "A", 5) == ["s_t"]  # A learns it lost it, and leaves it alone
    assert await a.lease_owner("s_t") == "B"
    assert a.lost_leases == 1
    assert await a.renew(["s_t"], "A", 5) == []  # no longer held: not tried again


async def test_release_is_not_undone_by_a_renewal(stores):
    a = await stores()
    assert await a.acquire("s_u", "A", 0.3)
    for _ in range(20):  # the keeper renews every 0.1 s meanwhile; a renewal never re-takes a release
        renewal = asyncio.ensure_future(a.renew(["s_u"], "A", 0.3))
        await a.release("s_u", "A")
        await renewal
        assert await a.lease_owner("s_u") is None
        assert await a.acquire("s_u", "A", 0.3)


async def test_renew_takes_back_a_lapsed_lease_nobody_took(stores):
    a = await stores()
    crash(a)  # no keeper: only explicit renewals
    assert await a.acquire("s_n", "A", 0.2)
    await asyncio.sleep(0.4)
    assert await a.lease_owner("s_n") is None
    assert await a.renew(["s_n"], "A", 5) == []
    assert await a.lease_owner("s_n") == "A"


async def test_delete_spares_a_session_another_node_holds(stores):
    a = await stores()
    b = await stores()
    a.put_record(record("s_h", last_active=1.0))
    await a.flush()
    assert await b.acquire("s_h", "B", 30)
    assert await a.acquire("s_other", "A", 30)  # a knows its node id, as a server's store does
    assert await a.expired(time.time()) == ["s_h"]
    a.delete("s_h")  # a's sweeper: the session looks idle, but B runs it
    await a.flush()
    assert await a.load("s_h") is not None
    b.delete("s_h")  # its owner may delete it
    await b.flush()
    assert await a.load("s_h") is None
    assert await a.lease_owner("s_h") is None


async def test_redis_stopped_mid_run(own_redis):
    store = RedisStore(own_redis.url)
    await store.start()
    try:
        store.put_record(record("s_m", seq=1))
        store.add_message("s_m", as_json({"role": "user", "content": "before"}))
        await store.flush()
        assert await store.acquire("s_m", "A", 2)
        assert store.health() == (True, "ok")

        own_redis.stop()
        started = time.perf_counter()
        store.put_record(record("s_m", seq=2))
        store.add_message("s_m", as_json({"role": "user", "content": "during"}))
        store.add_event("s_m", 2, b'{"seq":2}')
        assert time.perf_counter() - started < 0.05  # the hot path never waits for Redis
        await wait_until(lambda: not store.health()[0], 5, "health to report the outage")
        healthy, why = store.health()
        assert "redis unreachable" in why
        assert store.pending == 3  # kept, not lost
        with pytest.raises(StoreError):
            await store.load("s_m")
        with pytest.raises(StoreError):
            await store.acquire("s_other", "A", 2)
        with pytest.raises(StoreError):
            await store.expired(time.time())

        # Same port, but empty (this Redis persists nothing): what was queued arrives now.
        own_redis.start()
        await wait_until(lambda: store.health()[0] and store.pending == 0, 8, "the store to recover")
        stored = await store.load("s_m")
        assert stored.record.seq == 2
        assert stored.history == [{"role": "user", "content": "during"}]
        assert stored.events == [(2, b'{"seq":2}')]
        # The lease vanished with Redis' data; the keeper takes it back (nobody else holds it).
        deadline = time.monotonic() + 3
        while await store.lease_owner("s_m") != "A":
            assert time.monotonic() < deadline, "the lease was not taken back"
            await asyncio.sleep(0.05)
    finally:
        await store.stop()


async def test_redis_full_is_reported_and_nothing_is_lost(own_redis):
    store = RedisStore(own_redis.url)
    await store.start()
    try:
        store.put_record(record("s_full"))
        await store.flush()
        assert own_redis.command("CONFIG", "SET", "maxmemory", "1") == b"+OK\r\n"  # noeviction: writes refused
        for i in range(5):
            store.add_message("s_full", as_json({"role": "user", "content": f"m{i}"}))
        await wait_until(lambda: not store.health()[0], 5, "health to report the full store")
        assert "redis is full" in store.health()[1] and "OOM" in store.health()[1]
        assert store.pending == 5
        own_redis.command("CONFIG", "SET", "maxmemory", "0")
        await store.flush(5)
        assert store.health() == (True, "ok")
        history = (await store.load("s_full")).history
        assert [m["content"] for m in history] == [f"m{i}" for i in range(5)]  # once each, in order
    finally:
        await store.stop()


async def test_overflow_while_down_is_counted_and_stays_visible(own_redis):
    store = RedisStore(own_redis.url, max_pending=5)
    await store.start()
    try:
        own_redis.stop()
        for seq in range(1, 81):
            store.add_event("s_o", seq, b"{}")
        assert store.dropped == 30 and store.pending == 50
        assert "30 writes dropped" in store.health()[1]
        own_redis.start()
        await store.flush(8)
        assert store.pending == 0
        assert "30 writes dropped" in store.health()[1]
    finally:
        await store.stop()


async def test_budget_spends_from_two_nodes_are_atomic(redis_server):
    """INCRBY in a script: concurrent spends of two stores (two nodes) on one key lose nothing."""
    from myagent.supervisor.store.redis import RedisStore

    a = RedisStore(f"{redis_server.url}?prefix=budgetatomic")
    b = RedisStore(f"{redis_server.url}?prefix=budgetatomic")
    await a.start()
    await b.start()
    try:
        await asyncio.gather(*(store.spend("token:t", "2026-12-02", 7) for _ in range(50) for store in (a, b)))
        assert await a.spent("token:t", "2026-12-02") == 700 == await b.spent("token:t", "2026-12-02")
    finally:
        await a.stop()
        await b.stop()
