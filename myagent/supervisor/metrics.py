"""Counters the front process keeps for /status (and, later, /metrics).

Plain attributes and dicts on the hot path: incrementing an int costs nothing.
Latencies keep a bounded window of recent samples for percentiles.
"""

from __future__ import annotations

from collections import Counter, deque

LATENCY_WINDOW = 10_000


def percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Metrics:
    def __init__(self) -> None:
        self.connections_opened = 0
        self.connections_closed = 0
        self.connections_refused: Counter[str] = Counter()
        self.sessions_created = 0
        self.sessions_closed = 0
        self.sessions_restored = 0
        self.turns_started = 0
        self.turns_ended: Counter[str] = Counter()  # by terminal event name
        self.interrupted: Counter[str] = Counter()  # by reason
        self.errors: Counter[str] = Counter()       # by error code
        self.frames_in = 0
        self.turn_latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.first_event_latency: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def error(self, code: str) -> None:
        self.errors[code] += 1

    def first_event(self, seconds: float) -> None:
        self.first_event_latency.append(seconds)

    def turn_done(self, event: str, code: str | None, seconds: float) -> None:
        self.turns_ended[event] += 1
        if event == "agent.interrupted" and code:
            self.interrupted[code] += 1
        elif event == "agent.error" and code:
            self.errors[code] += 1
        if seconds > 0:
            self.turn_latency.append(seconds)

    def latency_summary(self) -> dict:
        turns = list(self.turn_latency)
        first = list(self.first_event_latency)
        ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
        return {"turn_p50_ms": ms(percentile(turns, 0.5)), "turn_p99_ms": ms(percentile(turns, 0.99)),
                "first_event_p50_ms": ms(percentile(first, 0.5)),
                "first_event_p99_ms": ms(percentile(first, 0.99)), "samples": len(turns)}
