"""Redis session store: many nodes behind a load balancer share one Redis.

Keys (``P`` is the prefix, ``myagent`` unless the URL says ``?prefix=NAME``):

=====================  ==========  ==================================================
``P:sessions``         zset        session id scored by last_active (for expired())
``P:SID:rec``          string      the SessionRecord as JSON
``P:SID:hist``         zset        history messages scored by a per-session number n;
                                   member ``b"%012d|" % n + json``; the newest
                                   ``history_limit`` are kept
``P:SID:ev``           zset        encoded events scored by seq (the event's bytes are
                                   the member: every event is unique); the newest
                                   ``events_limit`` are kept; trim_events drops <= seq
``P:SID:lease``        string      id of the node running the session, with PX expiry
``P:budget:DAY:WHO``   string      tokens holder WHO spent on the UTC day DAY (INCRBY,
                                   atomic across nodes); expires two days later
=====================  ==========  ==================================================

History is a sorted set rather than a list so that every write is idempotent:
a batch whose outcome is unknown (the connection broke mid-pipeline, or Redis
refused some commands with OOM) is sent again whole, and nothing is doubled.

Write-behind: the hot path (``put_record``/``add_message``/``add_event``...) only
appends to a bounded deque; one asyncio task sends batches as non-transactional
pipelines every few milliseconds, merging each session's writes of a batch into
a few commands. A batch that fails because Redis is down or full (OOM) stays
queued and is retried with back-off; ``error`` says why (shown by /ready and
/status) until a flush succeeds again. Past ``max_pending`` queued writes the
store reports itself full (new sessions are refused); past ten times that it
drops writes, counts them and says so.

Leases: ``acquire`` sets the lease if it is absent or already ours (Lua).
``renew`` extends the leases this store holds (re-taking one that lapsed while
nobody else took it, e.g. after a Redis restart) and returns the ones another
node holds now; a background task renews every ttl/3 on its own, so a lease
never lapses while the node lives, whatever the server's maintenance cadence.
``release`` deletes only our own; ``stop`` releases all of them, so another
node can take over at once after a graceful shutdown. ``delete`` removes a
session's keys only if no *other* node holds its lease, so a node sweeping
expired sessions never deletes one that is alive elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from myagent.supervisor.store.base import SessionRecord, SessionStore, StoredSession, StoreError

try:  # redis-py (>=5): an optional dependency, needed only for --store redis://
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis import exceptions as redis_exceptions
    from redis.exceptions import RedisError, ResponseError
except ImportError:  # pragma: no cover - reported by RedisStore()
    aioredis = None  # type: ignore[assignment]

log = logging.getLogger("myagent.supervisor.store")

BATCH = 2000            # operations per pipeline
FLUSH_INTERVAL = 0.003  # seconds the flusher waits to coalesce writes into one batch
HARD_FACTOR = 10        # past max_pending * HARD_FACTOR queued writes, new writes are dropped
RENEW_CHUNK = 500       # lease keys per renew script call
LOAD_FLUSH_TIMEOUT = 5.0
SOCKET_TIMEOUT = 5.0    # a Redis that accepts but does not answer: commands fail after this
STOP_FLUSH_TIMEOUT = 5.0

_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# Returns the 1-based indexes of the keys another node holds.
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif v == false then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    lost[#lost + 1] = i
  end
end
return lost
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# One atomic step: add the tokens and keep the key no longer than its day needs it.
_SPEND = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return v
"""
BUDGET_TTL = 2 * 86400  # seconds a day's balance is kept (its day, plus clock skew between nodes)
# KEYS: rec, hist, ev, lease, index; ARGV: sid, node. Kept if another node holds the lease.
_DELETE = """
local owner = redis.call('GET', KEYS[4])
if owner and owner ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
"""


def _split_url(url: str) -> tuple[str, str]:
    """Take our own ``prefix`` query parameter out of the URL; return (url for redis-py, prefix)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = "myagent"
    rest = []
    for key, value in query:
        if key == "prefix":
            prefix = value or prefix
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


def _safe_url(url: str) -> str:
    """The URL without credentials, for logs and /status."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _is_oom(exc: BaseException) -> bool:
    """Redis refused a write for lack of memory (maxmemory reached with noeviction): retry later."""
    oom = getattr(redis_exceptions, "OutOfMemoryError", ())  # redis-py strips the "OOM " prefix into it
    return isinstance(exc, oom) or (isinstance(exc, ResponseError) and (
        str(exc).startswith("OOM") or "maxmemory" in str(exc)))


class RedisStore(SessionStore):
    name = "redis"
    shared = True

    def __init__(self, url: str, **limits: Any) -> None:
        if aioredis is None:
            raise ValueError("--store redis:// needs the redis package: pip install 'redis>=5'")
        super().__init__(**limits)
        self.url, self.prefix = _split_url(url)
        self._redis: Any = None
        self._ops: deque[tuple] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._enqueued = 0   # operations ever queued (not counting dropped ones)
        self._applied = 0    # operations ever written (or given up on)
        self._inflight = 0   # operations of the batch being sent
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._msg_n: dict[str, int] = {}  # sid -> number of the last history message written
        self._held: set[str] = set()      # sessions whose lease this store took
        self.node = ""
        self.dropped = 0
        self.batches = 0
        self.retries = 0
        self.lost_leases = 0
        self._scripts: dict[str, Any] = {}
        self._refused: str | None = None  # set by a batch Redis refused in part for good
        self._keeper_task: asyncio.Task | None = None
        self._ttl = 0.0  # the lease ttl last asked for (acquire/renew)
        self._closing = False
        self._lease_lock = asyncio.Lock()

    # Keys -------------------------------------------------------------------------------
    def _k(self, sid: str, kind: str) -> str:
        return f"{self.prefix}:{sid}:{kind}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:sessions"

    def describe(self) -> str:
        shown = _safe_url(self.url)
        return shown if self.prefix == "myagent" else f"{shown} (prefix {self.prefix})"

    # Lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._redis = aioredis.from_url(
            self.url, decode_responses=False, socket_connect_timeout=2.0, socket_timeout=SOCKET_TIMEOUT,
            health_check_interval=10, retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1))
        for name, body in (("acquire", _ACQUIRE), ("renew", _RENEW), ("release", _RELEASE),
                           ("delete", _DELETE), ("spend", _SPEND)):
            self._scripts[name] = self._redis.register_script(body)
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            await self._close_client()
            raise StoreError(f"cannot reach redis at {self.describe()}: {exc}") from None
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._flusher(), name="redis-store-flusher")
        self._keeper_task = loop.create_task(self._keeper(), name="redis-store-leases")

    async def stop(self) -> None:
        if self._redis is None:
            return
        # Ask the background tasks to finish rather than cancelling them mid-command (a redis-py
        # command cancelled half way can leave its task hanging); cancel only what overstays.
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        await self._finish(self._keeper_task, 1.0 + SOCKET_TIMEOUT)
        self._keeper_task = None
        await self._finish(self._task, STOP_FLUSH_TIMEOUT)
        self._task = None
        for _, future in self._waiters:  # flush() callers: they check what was written and say so
            if not future.done():
                future.set_result(None)
        self._waiters = []
        if self.pending:
            log.error("redis store %s: stopping with %d writes not stored (%s)", self.describe(), self.pending,
                      self.error or "redis too slow")
        # Let other nodes take our sessions over at once rather than after --lease-ttl.
        if self._held and self.node and not self.pending:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for sid in self._held:
                        await self._scripts["release"](keys=[self._k(sid, "lease")], args=[self.node], client=pipe)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("redis store: could not release leases at stop: %s", exc)
        self._held.clear()
        await self._close_client()

    @staticmethod
    async def _finish(task: asyncio.Task | None, timeout: float) -> None:
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _close_client(self) -> None:
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except AttributeError:  # redis-py 5.0.0 has only close()
                await self._redis.close()
            except (RedisError, OSError):
                pass
            self._redis = None

    # Write-behind -----------------------------------------------------------------------
    def _put(self, op: tuple) -> None:
        if len(self._ops) >= self.max_pending * HARD_FACTOR:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10000 == 0:
                log.error("redis store %s is not keeping up: %d writes dropped", self.describe(), self.dropped)
            self.error = f"store overloaded: {self.dropped} writes dropped"
            return
        self._ops.append(op)
        self._enqueued += 1
        wake = self._wake
        if wake is not None and not wake.is_set():
            wake.set()

    def put_record(self, record: SessionRecord) -> None:
        self._put(("rec", record.id, orjson.dumps(record), record.last_active))  # dataclass: native in orjson

    def add_message(self, sid: str, message: str) -> None:
        # Numbered when queued, so a batch sent again writes the same member: no duplicates.
        n = self._msg_n.get(sid, 0) + 1
        self._msg_n[sid] = n
        self._put(("msg", sid, b"%012d|" % n + message.encode(), n))

    def replace_history(self, sid: str, messages: list[str]) -> None:
        # A clear, then the messages numbered from 1: the same members whenever the batch is
        # sent again, and ordered with the writes queued before and after it.
        self._msg_n[sid] = 0
        self._put(("clear", sid))
        for message in messages:
            self.add_message(sid, message)

    def add_event(self, sid: str, seq: int, data: bytes) -> None:
        self._put(("ev", sid, seq, data))

    def trim_events(self, sid: str, upto_seq: int) -> None:
        self._put(("trim", sid, upto_seq))

    def delete(self, sid: str) -> None:
        self._held.discard(sid)
        self._msg_n.pop(sid, None)
        self._put(("del", sid, self.node))

    @property
    def pending(self) -> int:
        return len(self._ops) + self._inflight

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is written; StoreError if that takes over ``timeout`` s."""
        target = self._enqueued
        if self._applied >= target or self._task is None:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise StoreError(f"redis did not take {self.pending} pending writes in {timeout:g}s"
                             + (f" ({self.error})" if self.error else "")) from None
        if self._applied < target:
            raise StoreError(f"the store stopped with {self.pending} writes not stored")

    def _notify(self) -> None:
        if not self._waiters:
            return
        keep = []
        for target, future in self._waiters:
            if self._applied >= target:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((target, future))
        self._waiters = keep

    async def _flusher(self) -> None:
        assert self._wake is not None
        backoff = 0.0
        while True:
            if not self._ops:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                if not self._closing:
                    await asyncio.sleep(FLUSH_INTERVAL)  # let a burst of writes join the batch
                continue
            count = min(len(self._ops), BATCH)
            batch = [self._ops.popleft() for _ in range(count)]
            self._inflight = count
            try:
                failed = await self._apply(batch)
            except asyncio.CancelledError:
                self._ops.extendleft(reversed(batch))
                self._inflight = 0
                raise
            except (RedisError, OSError) as exc:
                failed = f"redis unreachable: {type(exc).__name__}: {exc}"
            self._inflight = 0
            if failed is None:
                self._applied += count
                self.batches += 1
                backoff = 0.0
                if not self.dropped:
                    if self.error is not None and self._refused is None:
                        log.info("redis store %s is writable again", self.describe())
                    self.error, self._refused = self._refused, None
                self._notify()
                continue
            # Down or full: keep the batch (every write is idempotent) and try again later.
            self._ops.extendleft(reversed(batch))
            if self.error != failed and not self.dropped:
                log.error("redis store %s: %s (%d writes waiting)", self.describe(), failed, self.pending)
            if not self.dropped:
                self.error = failed
            self.retries += 1
            if self._closing:
                return  # stop() reports what is left
            backoff = min(1.0, backoff * 2 or 0.05)
            await asyncio.sleep(backoff)

    async def _apply(self, ops: list[tuple]) -> str | None:
        """Send one batch; None if it is stored, else why it must be retried.

        Consecutive additions to one session are merged (one ZADD for its events, one for its
        messages, the last record only), so a batch costs a few commands per session rather
        than one per write; a trim or delete first sends what was merged before it."""
        merged: dict[str, list] = {}  # sid -> [event members, history members, record or None]
        index: dict[str, float] = {}  # sid -> last_active, for the sessions index
        touched_hist: set[str] = set()
        touched_ev: set[str] = set()
        k = self._k
        async with self._redis.pipeline(transaction=False) as pipe:

            def send(sid: str) -> None:
                entry = merged.pop(sid, None)
                if entry is None:
                    return
                events, messages, rec = entry
                if events:
                    pipe.zadd(k(sid, "ev"), events)
                if messages:
                    pipe.zadd(k(sid, "hist"), messages)
                if rec is not None:
                    pipe.set(k(sid, "rec"), rec)

            for op in ops:
                kind, sid = op[0], op[1]
                if kind == "ev" or kind == "msg" or kind == "rec":
                    entry = merged.get(sid)
                    if entry is None:
                        entry = merged[sid] = [{}, {}, None]
                    if kind == "ev":
                        entry[0][op[3]] = op[2]
                        touched_ev.add(sid)
                    elif kind == "msg":
                        entry[1][op[2]] = op[3]
                        touched_hist.add(sid)
                    else:
                        entry[2] = op[2]
                        index[sid] = op[3]
                elif kind == "trim":
                    send(sid)
                    pipe.zremrangebyscore(k(sid, "ev"), "-inf", op[2])
                elif kind == "clear":
                    send(sid)
                    pipe.delete(k(sid, "hist"))
                elif kind == "del":
                    send(sid)
                    index.pop(sid, None)
                    touched_hist.discard(sid)
                    touched_ev.discard(sid)
                    await self._scripts["delete"](
                        keys=[k(sid, "rec"), k(sid, "hist"), k(sid, "ev"), k(sid, "lease"), self._index],
                        args=[sid, op[2]], client=pipe)
            for sid in list(merged):
                send(sid)
            if index:
                pipe.zadd(self._index, index)
            # Bounds: keep the newest events_limit events and history_limit messages.
            for sid in touched_ev:
                pipe.zremrangebyrank(k(sid, "ev"), 0, -self.events_limit - 1)
            for sid in touched_hist:
                pipe.zremrangebyrank(k(sid, "hist"), 0, -self.history_limit - 1)
            results = await pipe.execute(raise_on_error=False)
        errors = [r for r in results if isinstance(r, Exception)]
        if not errors:
            return None
        for exc in errors:
            if _is_oom(exc):
                return f"redis is full (OOM): {exc}"
            if not isinstance(exc, ResponseError):
                return f"redis unreachable: {type(exc).__name__}: {exc}"
        # A command Redis refuses for good (not OOM): retrying cannot help. Say so; go on.
        log.error("redis store %s refused %d writes: %s", self.describe(), len(errors), errors[0])
        self._refused = f"redis refused writes: {errors[0]}"
        return None

    # Reads ------------------------------------------------------------------------------
    async def load(self, sid: str) -> StoredSession | None:
        if self.error is not None and self.pending:
            # Our writes cannot get through: waiting for them would only delay the answer.
            raise StoreError(f"cannot read session {sid}: {self.error}")
        await self.flush(LOAD_FLUSH_TIMEOUT)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self._k(sid, "rec"))
                pipe.zrange(self._k(sid, "hist"), 0, -1, withscores=True)
                pipe.zrange(self._k(sid, "ev"), 0, -1, withscores=True)
                raw, hist, events = await pipe.execute()
        except (RedisError, OSError) as exc:
            self.error = f"redis unreachable: {type(exc).__name__}: {exc}"
            raise StoreError(f"cannot read session {sid} from redis: {exc}") from None
        if raw is None:
            return None
        history = [orjson.loads(member[member.index(b"|") + 1:]) for member, _ in hist]
        if hist:
            self._msg_n[sid] = max(self._msg_n.get(sid, 0), int(hist[-1][1]))
        stored_events = [(int(score), bytes(member)) for member, score in events]
        return StoredSession(SessionRecord.from_dict(orjson.loads(raw)), history, stored_events)

    async def expired(self, idle_before: float, limit: int = 1000) -> list[str]:
        try:
            ids = await self._redis.zrangebyscore(self._index, "-inf", f"({idle_before!r}", start=0, num=limit)
        except (RedisError, OSError) as exc:
            self.error = f"redis unreachable: {type(exc).__name__}: {exc}"
            raise StoreError(f"cannot list expired sessions: {exc}") from None
        return [sid.decode() for sid in ids]

    # Leases -----------------------------------------------------------------------------
    async def _keeper(self) -> None:
        """Renew our leases every ttl/3 whatever the server's maintenance cadence, so a lease
        never lapses while this node is alive; with none held, a PING keeps health current."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self._closing:
            await asyncio.sleep(0.1)  # short naps: a lease just taken with a short ttl is kept too
            if self._closing:
                return
            if loop.time() - last < (max(0.1, self._ttl / 3) if self._ttl else 1.0):
                continue
            last = loop.time()
            try:
                await self.renew(list(self._held) if self.node and self._ttl else [], self.node, self._ttl)
            except StoreError:
                pass  # recorded in self.error; /ready and /status show it

    async def acquire(self, sid: str, node: str, ttl: float) -> bool:
        self.node = node
        self._ttl = ttl
        async with self._lease_lock:
            try:
                ok = await self._scripts["acquire"](keys=[self._k(sid, "lease")],
                                                    args=[node, max(1, int(ttl * 1000))])
            except (RedisError, OSError) as exc:
                self.error = f"redis unreachable: {type(exc).__name__}: {exc}"
                raise StoreError(f"cannot take the lease of {sid}: {exc}") from None
            if ok:
                self._held.add(sid)
        return bool(ok)

    async def renew(self, sids: list[str], node: str, ttl: float) -> list[str]:
        """Extend our leases; return the sessions another node holds now (this node must let them go)."""
        self.node = node
        self._ttl = ttl or self._ttl
        async with self._lease_lock:  # never interleaved with acquire/release: a release stays released
            return await self._renew([sid for sid in sids if sid in self._held], node, ttl)

    async def _renew(self, sids: list[str], node: str, ttl: float) -> list[str]:
        lost: list[str] = []
        started = time.monotonic()
        try:
            if not sids or ttl <= 0:
                await self._redis.ping()  # still says whether Redis is reachable (for /ready)
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    chunks = [sids[i:i + RENEW_CHUNK] for i in range(0, len(sids), RENEW_CHUNK)]
                    for chunk in chunks:
                        await self._scripts["renew"](keys=[self._k(sid, "lease") for sid in chunk],
                                                     args=[node, max(1, int(ttl * 1000))], client=pipe)
                    results = await pipe.execute()
                for chunk, indexes in zip(chunks, results):
                    lost.extend(chunk[int(i) - 1] for i in indexes)
        except (RedisError, OSError) as exc:
            self.error = f"redis unreachable: {type(exc).__name__}: {exc}"
            raise StoreError(f"cannot renew leases: {exc}") from None
        if self.error is not None and not self.pending and not self.dropped:
            self.error = None  # reachable again and nothing waits to be written
        if lost:
            self.lost_leases += len(lost)
            self._held.difference_update(lost)
            log.error("redis store: %d sessions are held by another node now (lease lost): %s",
                      len(lost), ", ".join(lost[:5]))
        elapsed = time.monotonic() - started
        if ttl > 0 and elapsed > ttl / 2:
            log.warning("renewing %d leases took %.2fs (lease ttl %.1fs)", len(sids), elapsed, ttl)
        return lost

    async def release(self, sid: str, node: str) -> None:
        self._held.discard(sid)
        async with self._lease_lock:
            try:
                await self._scripts["release"](keys=[self._k(sid, "lease")], args=[node])
            except (RedisError, OSError) as exc:
                self.error = f"redis unreachable: {type(exc).__name__}: {exc}"
                raise StoreError(f"cannot release the lease of {sid}: {exc}") from None

    # Token budgets: read and added to in Redis itself, so every node sees one balance.
    async def spent(self, key: str, day: str) -> int:
        try:
            value = await self._redis.get(f"{self.prefix}:budget:{day}:{key}")
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot read a token balance: {exc}") from None
        return int(value) if value is not None else 0

    async def spend(self, key: str, day: str, tokens: int) -> int:
        try:
            return int(await self._scripts["spend"](keys=[f"{self.prefix}:budget:{day}:{key}"],
                                                     args=[tokens, BUDGET_TTL]))
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot add to a token balance: {exc}") from None

    async def lease_owner(self, sid: str) -> str | None:
        """The node holding ``sid`` now (for tests and operators)."""
        value = await self._redis.get(self._k(sid, "lease"))
        return value.decode() if value is not None else None
