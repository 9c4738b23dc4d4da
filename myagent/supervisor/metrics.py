"""Counters the front process keeps for /status and /metrics.

Plain attributes and dicts on the hot path: incrementing an int costs nothing,
and nothing here knows about Prometheus (myagent/supervisor/prom.py reads these
at scrape time). Latencies keep a bounded window of recent samples for
percentiles, plus cumulative histogram buckets (one bisect per turn, not per
event) for /metrics.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, deque

LATENCY_WINDOW = 10_000
MAX_MODELS = 32  # distinct model labels on /metrics; later ones count as "other" (sandboxes name them)

# Upper bounds (seconds) of the histogram buckets; +Inf is implied.
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FIRST_EVENT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Histogram:
    """Cumulative-from-start bucket counts: ``observe`` is one bisect and two adds."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le semantics: value == bound lands in it
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """[(upper bound, cumulative count), ...] ending with (inf, count), as Prometheus wants them."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            out.append((bound, running))
        return out


class Metrics:
    def __init__(self) -> None:
        self.connections_opened = 0
        self.connections_closed = 0
        self.connections_refused: Counter[str] = Counter()
        self.sessions_created = 0
        self.sessions_closed = 0
        self.sessions_restored = 0
        self.sessions_quarantined = 0
        self.sessions_evicted = 0
        self.turns_started = 0
        self.turns_ended: Counter[str] = Counter()  # by terminal event name
        self.interrupted: Counter[str] = Counter()  # by reason
        self.errors: Counter[str] = Counter()       # by error code
        self.frames_in = 0
        self.frames_rejected: Counter[str] = Counter()  # sandbox frames dropped, by why (Placement.offence)
        # Frames written to connections that are gone; live ones count in Connection.sent.
        self.events_sent_closed = 0
        self.turn_latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.first_event_latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.turn_histogram = Histogram(TURN_BUCKETS)
        self.first_event_histogram = Histogram(FIRST_EVENT_BUCKETS)
        self._summary: tuple[tuple[int, int], dict] | None = None
        # Token usage by (agent, model): [prompt, completion, total, requests, unknown requests,
        # LLM seconds, tool seconds]; turns whose usage is unknown by agent.
        self.usage: dict[tuple[str, str], list] = {}
        self.usage_unknown_turns: Counter[str] = Counter()

    def error(self, code: str) -> None:
        self.errors[code] += 1

    def first_event(self, seconds: float) -> None:
        self.first_event_latency.append(seconds)
        self.first_event_histogram.observe(seconds)

    def turn_done(self, event: str, code: str | None, seconds: float) -> None:
        self.turns_ended[event] += 1
        if event == "agent.interrupted" and code:
            self.interrupted[code] += 1
        elif event == "agent.error" and code:
            self.errors[code] += 1
        if seconds > 0:
            self.turn_latency.append(seconds)
            self.turn_histogram.observe(seconds)

    def add_usage(self, agent: str, usage: dict | None) -> None:
        """One turn's checked usage (myagent.protocol.usage), or None when it is unknown."""
        if usage is None:
            self.usage_unknown_turns[agent] += 1
            return
        key = (agent, usage["model"])
        row = self.usage.get(key)
        if row is None:
            if sum(1 for a, _ in self.usage if a == agent) >= MAX_MODELS:
                key = (agent, "other")
                row = self.usage.get(key)
            if row is None:
                row = self.usage[key] = [0, 0, 0, 0, 0, 0.0, 0.0]
        row[0] += usage["prompt_tokens"]
        row[1] += usage["completion_tokens"]
        row[2] += usage["total_tokens"]
        row[3] += usage["llm_requests"]
        row[4] += usage["unknown_requests"]
        row[5] += usage["llm_ms"] / 1000
        row[6] += usage["tool_ms"] / 1000

    def latency_summary(self) -> dict:
        """Percentiles of the recent window; recomputed only when a sample was added since the last call."""
        key = (self.turn_histogram.count, self.first_event_histogram.count)
        if self._summary is None or self._summary[0] != key:
            self._summary = (key, self._compute_summary())
        return dict(self._summary[1])

    def _compute_summary(self) -> dict:
        turns = sorted(self.turn_latency)
        first = sorted(self.first_event_latency)
        ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
        return {"turn_p50_ms": ms(_sorted_percentile(turns, 0.5)), "turn_p99_ms": ms(_sorted_percentile(turns, 0.99)),
                "first_event_p50_ms": ms(_sorted_percentile(first, 0.5)),
                "first_event_p99_ms": ms(_sorted_percentile(first, 0.99)), "samples": len(turns)}


def _sorted_percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
