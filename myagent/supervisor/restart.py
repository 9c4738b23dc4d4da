"""Restart intensity with exponential backoff (pure; the clock is injected).

Erlang/OTP style: at most ``max_restarts`` restarts within ``window`` seconds.
Each restart inside the window waits twice as long as the previous one (from
``backoff`` up to ``backoff_max``). Past the budget the policy is exhausted:
the agent is declared unavailable instead of being respawned forever.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable


BLAMED_FACTOR = 5  # blamed restarts allowed per window, in multiples of max_restarts


class RestartPolicy:
    def __init__(self, max_restarts: int = 10, window: float = 60.0, backoff: float = 0.05,
                 backoff_max: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.clock = clock
        self._recent: deque[float] = deque()
        self._blamed: deque[float] = deque()
        self.exhausted = False
        self.total = 0

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0] > self.window:
            self._recent.popleft()

    def next_delay(self, charge: bool = True) -> float | None:
        """Record one restart; return the delay before it, or None when the budget is spent.

        An uncharged restart (a crash blamed on a session, see quarantine.py) does not
        spend the budget and waits the base backoff."""
        self.total += 1
        now = self.clock()
        self._trim(now)
        if not charge:
            # Blamed crashes have their own, larger intensity: past it they are charged like any other,
            # so even sessions created to crash the agent one after another cannot loop forever.
            while self._blamed and now - self._blamed[0] > self.window:
                self._blamed.popleft()
            if not self.exhausted and len(self._blamed) < BLAMED_FACTOR * self.max_restarts:
                self._blamed.append(now)
                return self.backoff
        if self.exhausted or len(self._recent) >= self.max_restarts:
            self.exhausted = True
            self.total -= 1
            return None
        self._recent.append(now)
        return min(self.backoff * 2 ** (len(self._recent) - 1), self.backoff_max)

    @property
    def recent(self) -> int:
        self._trim(self.clock())
        return len(self._recent)

    def reset(self) -> None:
        self._recent.clear()
        self._blamed.clear()
        self.exhausted = False
