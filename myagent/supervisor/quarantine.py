"""Dead-lettering for sessions whose turns keep crashing their sandbox (pure; the clock is injected).

A sandbox that dies while turns run is blamed on those turns' sessions; a
session blamed ``max_crashes`` times within ``window`` seconds is quarantined:
it keeps its history (reconnect, export and close still work) but runs no
more turns. Crashes no running turn explains are the restart budget's
business (:class:`~myagent.supervisor.restart.RestartPolicy`), so a user who
crashes the agent on purpose spends their own sessions, not everyone's budget.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable


class Quarantine:
    def __init__(self, max_crashes: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_crashes = max_crashes
        self.window = window
        self.clock = clock

    def blame(self, crashes: deque) -> bool:
        """Record one crash in a session's ``crashes`` (timestamps); True when it must be quarantined."""
        now = self.clock()
        crashes.append(now)
        while crashes and now - crashes[0] > self.window:
            crashes.popleft()
        return 0 < self.max_crashes <= len(crashes)
