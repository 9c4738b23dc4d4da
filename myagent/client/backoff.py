"""When to try reconnecting again, and when to stop: a small pure policy (no clock, no sleep).

The defaults follow the browser console (0.3 s doubling up to 5 s) and give up
after 60 s: a server restart takes a few seconds, and past a minute the user
is better told than kept waiting (a detached session keeps for the server's
``session_ttl``, 600 s by default, so a later ``chat`` cannot resume it
either: the chat keeps its resume token in memory only).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

RECONNECT_FIRST_DELAY = 0.3   # seconds before the first retry
RECONNECT_MAX_DELAY = 5.0     # the delay doubles up to this
RECONNECT_GIVE_UP = 60.0      # seconds of failed attempts before the chat says so and stops
RECONNECT_JITTER = 0.2        # +-20 %: clients dropped together do not come back in step


@dataclass
class Backoff:
    """Exponential backoff with jitter, bounded in delay and in total time."""

    first: float = RECONNECT_FIRST_DELAY
    max_delay: float = RECONNECT_MAX_DELAY
    give_up_after: float = RECONNECT_GIVE_UP
    jitter: float = RECONNECT_JITTER
    factor: float = 2.0
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...)."""
        base = min(self.first * self.factor ** max(attempt - 1, 0), self.max_delay)
        return base * (1 + self.jitter * (2 * self.rand() - 1))

    def gives_up(self, elapsed: float, next_delay: float = 0.0) -> bool:
        """True when waiting ``next_delay`` more would go past ``give_up_after`` seconds of trying."""
        return elapsed + next_delay > self.give_up_after
