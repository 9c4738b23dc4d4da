"""Budgets (myagent/supervisor/budgets.py): allowances, refusals, charges, UTC days; a fake store."""

from __future__ import annotations

import asyncio
import datetime as dt

from myagent.supervisor.budgets import Budgets, holder, next_reset, utc_day
from myagent.supervisor.store.base import MemoryStore, StoreError

NOON = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.timezone.utc).timestamp()
LAST_SECOND = dt.datetime(2026, 12, 2, 23, 59, 59, tzinfo=dt.timezone.utc).timestamp()


class FailingStore(MemoryStore):
    async def spent(self, key: str, day: str) -> int:
        raise StoreError("redis unreachable")

    async def spend(self, key: str, day: str, tokens: int) -> int:
        raise StoreError("redis unreachable")


class SlowStore(MemoryStore):
    """Spends take until ``release`` is set: a read must wait for the charge in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def spend(self, key: str, day: str, tokens: int) -> int:
        await self.release.wait()
        return await super().spend(key, day, tokens)


def test_days_and_resets_are_utc():
    assert utc_day(NOON) == utc_day(LAST_SECOND) == "2026-12-02"
    assert utc_day(LAST_SECOND + 1) == "2026-12-03"
    assert next_reset(NOON) == next_reset(LAST_SECOND) == "2026-12-03T00:00:00Z"


def test_the_holder_is_the_principal_or_without_auth_the_session():
    assert holder("token:abc", "s_1") == "token:abc"
    assert holder("anonymous", "s_1") == "session:s_1"


async def test_allowance_is_the_smaller_of_the_balance_and_the_turn_limit():
    store = MemoryStore()
    budgets = Budgets(1000, 300, store, clock=lambda: NOON)
    assert await budgets.allowance("token:a", "s_1") == {"tokens": 300, "kind": "turn", "limit": 300,
                                                         "resets_at": None}
    await store.spend("token:a", "2026-12-02", 800)
    assert await budgets.allowance("token:a", "s_1") == {"tokens": 200, "kind": "day", "limit": 1000,
                                                         "resets_at": "2026-12-03T00:00:00Z"}
    await store.spend("token:a", "2026-12-02", 250)
    refused = await budgets.allowance("token:a", "s_1")
    assert refused["tokens"] == 0 and refused["kind"] == "day" and budgets.refused == 1
    assert (await budgets.allowance("token:b", "s_2"))["tokens"] == 300  # someone else's balance


async def test_turn_limit_alone_needs_no_store():
    budgets = Budgets(0, 50, FailingStore())
    assert await budgets.allowance("anonymous", "s_1") == {"tokens": 50, "kind": "turn", "limit": 50,
                                                           "resets_at": None}
    budgets.charge("anonymous", "s_1", 10_000)  # no daily budget: nothing is recorded
    assert not budgets._charging and budgets.enabled and not Budgets(0, 0, MemoryStore()).enabled


async def test_a_balance_read_waits_for_the_charge_in_flight():
    store = SlowStore()
    budgets = Budgets(100, 0, store, clock=lambda: NOON)
    budgets.charge("token:a", "s_1", 150)
    read = asyncio.ensure_future(budgets.allowance("token:a", "s_1"))
    await asyncio.sleep(0)
    assert not read.done()  # a read now would miss the 150 tokens
    store.release.set()
    assert (await read)["tokens"] == 0


async def test_charges_of_one_holder_apply_in_order_and_drain():
    store = MemoryStore()
    budgets = Budgets(10_000, 0, store, clock=lambda: NOON)
    for tokens in (10, 20, 30):
        budgets.charge("token:a", "s_1", tokens)
    await budgets.drain()
    assert await store.spent("token:a", "2026-12-02") == 60 and not budgets._charging


async def test_a_store_outage_lets_turns_run_with_the_turn_limit():
    budgets = Budgets(100, 40, FailingStore(), clock=lambda: NOON)
    assert (await budgets.allowance("token:a", "s_1"))["tokens"] == 40
    budgets.charge("token:a", "s_1", 5)
    await budgets.drain()
    assert budgets.store_errors == 2
