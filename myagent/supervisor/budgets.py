"""Token budgets: how many tokens a turn may spend, and charging what it spent.

Two optional limits (off by default): ``--budget-tokens-per-day`` for each *budget holder*
and ``--max-tokens-per-turn`` for every turn. The holder is the principal (the auth token)
when the server has auth tokens: every session of a token spends one balance; without auth it
is the session (anyone can open another session, so per-session budgets bound a session, not
a client: the per-address session caps bound the rest). Days are UTC days: a balance resets
at 00:00 UTC.

The front owns the balance (kept in the session store, so restarts and other nodes see it)
and the sandbox enforces it: before a turn is sent to its sandbox, :meth:`Budgets.allowance`
reads the holder's balance; a spent one refuses the turn there (the LLM sees no request),
otherwise the turn carries its allowance (the smaller of what is left today and the per-turn
limit) and the sandbox refuses the LLM request after the one that spends it. What a turn
spent is charged when it ends (:meth:`Budgets.charge`). So a turn can go past its allowance by
the tokens of its last request, and turns of one holder running at the same time each get
the balance left when they started: budgets bound spending, they are not exact to the token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any, Callable

from myagent.supervisor.store.base import StoreError

log = logging.getLogger("myagent.supervisor.budgets")

ANONYMOUS = "anonymous"  # the principal of every client when the server has no auth tokens


def utc_day(now: float) -> str:
    """The UTC day of ``now`` (epoch seconds), ``YYYY-MM-DD``: the key of a day's balance."""
    return dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d")


def next_reset(now: float) -> str:
    """When the day's balances reset: the next 00:00 UTC, ISO 8601 with ``Z``."""
    day = dt.datetime.fromtimestamp(now, dt.timezone.utc).date() + dt.timedelta(days=1)
    return f"{day.isoformat()}T00:00:00Z"


def holder(owner: str, sid: str) -> str:
    """Whose balance a session spends: its principal, or without auth the session itself."""
    return owner if owner != ANONYMOUS else f"session:{sid}"


class Budgets:
    """The two limits and the store that keeps the daily balances."""

    def __init__(self, per_day: int, per_turn: int, store: Any, clock: Callable[[], float] = time.time) -> None:
        self.per_day = per_day
        self.per_turn = per_turn
        self.store = store
        self.clock = clock
        self.enabled = per_day > 0 or per_turn > 0
        self._charging: dict[str, asyncio.Task] = {}  # holder -> its charge in flight
        self.refused = 0
        self.store_errors = 0

    async def allowance(self, owner: str, sid: str) -> dict[str, Any]:
        """The turn's budget ``{tokens, kind, limit, resets_at}``; ``tokens`` 0 refuses the turn."""
        per_day, per_turn = self.per_day, self.per_turn
        if not per_day:
            return {"tokens": per_turn, "kind": "turn", "limit": per_turn, "resets_at": None}
        key = holder(owner, sid)
        charging = self._charging.get(key)
        if charging is not None:  # the previous turn's charge first: the balance includes it
            await asyncio.wait({charging})
        now = self.clock()
        try:
            left = per_day - await self.store.spent(key, utc_day(now))
        except StoreError as exc:
            # The store is down: turns go on with the per-turn limit alone rather than stopping
            # a service whose sessions still work. /ready and /status show the store's state.
            self.store_errors += 1
            log.warning("token balance of %s unknown (%s); the turn runs without the daily budget", key, exc)
            left = per_day
        resets = next_reset(now)
        if left <= 0:
            self.refused += 1
            return {"tokens": 0, "kind": "day", "limit": per_day, "resets_at": resets}
        if per_turn and per_turn <= left:
            return {"tokens": per_turn, "kind": "turn", "limit": per_turn, "resets_at": None}
        return {"tokens": left, "kind": "day", "limit": per_day, "resets_at": resets}

    def charge(self, owner: str, sid: str, tokens: int) -> None:
        """Add a finished turn's tokens to its holder's balance for today (in the background)."""
        if not self.per_day or tokens <= 0:
            return
        key = holder(owner, sid)
        previous = self._charging.get(key)
        task = asyncio.get_running_loop().create_task(self._charge(key, tokens, previous))
        self._charging[key] = task
        task.add_done_callback(lambda done: self._charging.pop(key, None) if self._charging.get(key) is done
                               else None)

    async def _charge(self, key: str, tokens: int, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        try:
            await self.store.spend(key, utc_day(self.clock()), tokens)
        except StoreError as exc:
            self.store_errors += 1
            log.error("could not charge %d tokens to %s: %s", tokens, key, exc)

    async def drain(self) -> None:
        """Wait for the charges in flight (at shutdown, before the store stops)."""
        if self._charging:
            await asyncio.wait(set(self._charging.values()), timeout=5.0)
