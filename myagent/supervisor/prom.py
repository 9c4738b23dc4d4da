"""GET /metrics: the front process's counters in Prometheus text format.

Nothing on the hot path calls prometheus-client. The server keeps plain ints,
Counters and bucket arrays (``Metrics``), and ``ServerCollector`` turns them,
and the live state of the router and the pool, into metric families when
Prometheus scrapes. Every ``Server`` owns its own ``CollectorRegistry`` (the
global default registry is never touched: tests run several servers in one
process).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from myagent import __version__
from myagent.supervisor.metrics import Histogram

if TYPE_CHECKING:
    from myagent.supervisor.server import Server

try:  # 0.0.4 is what every Prometheus understands; newer clients also name 1.0.0 "latest"
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:  # pragma: no cover - prometheus-client < 0.21
    from prometheus_client.exposition import CONTENT_TYPE_LATEST as CONTENT_TYPE

PREFIX = "myagent_ws_"


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _labelled(family: Any, label_value_pairs: Iterable[tuple[str, float]]) -> Any:
    for label, value in sorted(label_value_pairs):
        family.add_metric([str(label)], value)
    return family


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    buckets = [("+Inf" if math.isinf(bound) else floatToGoString(bound), count)
               for bound, count in hist.cumulative()]
    return HistogramMetricFamily(PREFIX + name, doc, buckets=buckets, sum_value=hist.sum)


def merge_by_agent(per_agent: Iterable[tuple[str, Iterable[Metric]]]) -> Iterator[Metric]:
    """One family per metric name, each sample labelled with its agent (a name may appear once)."""
    merged: dict[str, Metric] = {}
    for agent, families in per_agent:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            target.samples += [s._replace(labels={**s.labels, "agent": agent}) for s in family.samples]
    return iter(merged.values())


class ServerCollector(Collector):
    """Reads a Server's counters and live state at scrape time: every agent's series labelled
    ``agent``, then what the agents share (the store)."""

    def __init__(self, server: "Server") -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        units = [unit for unit in server.agents if not unit.retiring]
        unrouted = _labelled(CounterMetricFamily(PREFIX + "connections_refused", "", labels=["reason"]),
                             server.refused_unrouted.items())
        yield from merge_by_agent([*((unit.name, self.agent_families(unit)) for unit in units), ("", [unrouted])])
        store = getattr(server, "store", None)
        if store is not None:
            yield _gauge("store_healthy", "1 while the session store accepts writes.", 1 if store.health()[0] else 0)
            yield _gauge("store_pending_writes", "Session-store writes queued, not yet flushed.", store.pending)

    def agent_families(self, unit: Any) -> Iterator[Metric]:
        m, router, pool, config = unit.metrics, unit.router, unit.pool, unit.config
        sessions = router.registry.sessions
        connections = router.connections.values()
        ready, _ = unit.readiness()

        info = GaugeMetricFamily(PREFIX + "build_info", "Version of the server; always 1.",
                                 labels=["version", "agent_name"])
        info.add_metric([__version__, str(pool.agent.get("name") or "")], 1)
        yield info
        store = getattr(self.server, "store", None)
        ready = ready and not self.server.draining and (store is None or store.health()[0])
        yield _gauge("ready", "1 while this agent can take a session (/ready answers 200 when all can).",
                     1 if ready else 0)
        yield _gauge("draining", "1 while shutting down (SIGTERM received).", 1 if router.draining else 0)
        yield _gauge("agent_unavailable", "1 once the sandbox restart budget is spent.",
                     1 if pool.unavailable_reason else 0)

        # Connections
        yield _counter("connections_opened", "WebSocket connections accepted.", m.connections_opened)
        yield _counter("connections_closed", "WebSocket connections closed.", m.connections_closed)
        yield _labelled(CounterMetricFamily(PREFIX + "connections_refused", "Upgrades refused, by reason.",
                                            labels=["reason"]), m.connections_refused.items())
        yield _gauge("connections", "Open WebSocket connections.", len(router.connections))
        yield _gauge("outbound_queue_bytes", "Bytes queued to clients, summed over connections.",
                     sum(c.queued_bytes for c in connections))
        sent = m.events_sent_closed + sum(c.sent for c in connections)
        yield _counter("events_sent", "Frames written to clients (session and system events).", sent)
        yield _counter("frames_received", "Frames received from clients.", m.frames_in)

        # Sessions
        yield _counter("sessions_created", "Sessions created.", m.sessions_created)
        yield _counter("sessions_closed", "Sessions ended (closed by the client or expired).", m.sessions_closed)
        yield _counter("sessions_quarantined", "Sessions quarantined: their turns kept crashing their sandbox.",
                       m.sessions_quarantined)
        yield _counter("sessions_evicted", "Detached sessions ended at a per-address or per-token session cap.",
                       m.sessions_evicted)
        yield _gauge("session_slots_free", "Sessions the ready sandboxes can take now.", unit.placement.free_slots)
        yield _counter("sessions_restored", "Sessions re-opened on a new sandbox after theirs was lost.",
                       m.sessions_restored)
        detached = running = 0
        for session in sessions.values():
            if session.connection is None:
                detached += 1
            if session.turn is not None:
                running += 1
        current = GaugeMetricFamily(PREFIX + "sessions", "Sessions by state (active = attached to a connection).",
                                    labels=["state"])
        current.add_metric(["active"], len(sessions) - detached)
        current.add_metric(["detached"], detached)
        yield current

        # Turns
        yield _counter("turns_started", "Turns started.", m.turns_started)
        yield _labelled(CounterMetricFamily(PREFIX + "turns_ended", "Turns ended, by terminal event.",
                                            labels=["event"]), m.turns_ended.items())
        yield _labelled(CounterMetricFamily(PREFIX + "turns_interrupted", "Interrupted turns, by reason.",
                                            labels=["reason"]), m.interrupted.items())
        yield _gauge("turns_running", "Turns running now.", running)
        yield _histogram("turn_duration_seconds", "Wall time of a turn, message to terminal event.",
                         m.turn_histogram)
        yield _histogram("time_to_first_event_seconds", "Time from a user message to the turn's first event.",
                         m.first_event_histogram)
        yield _labelled(CounterMetricFamily(PREFIX + "errors", "Errors sent to clients, by error code.",
                                            labels=["code"]), m.errors.items())

        yield from _usage_families(m)

        # Sandboxes (RSS and CPU are the watchdog's last sample: no syscalls here)
        yield _labelled(CounterMetricFamily(PREFIX + "sandbox_restarts", "Sandboxes lost and replaced, by reason "
                                            "(SANDBOX_CRASHED, MEMORY_LIMIT, CPU_LIMIT, WORKER_TIMEOUT).",
                                            labels=["reason"]), pool.restarts_by_reason.items())
        yield _labelled(CounterMetricFamily(PREFIX + "sandbox_frames_rejected", "Frames a sandbox sent for a session "
                                            "or turn it does not own (or malformed), dropped; by why.",
                                            labels=["reason"]), m.frames_rejected.items())
        queued = sum(len(session.inbox) for session in sessions.values())
        yield _gauge("messages_queued", "User messages waiting for their session to be free.", queued)
        yield _gauge("sandbox_restarts_recent", "Restarts inside the current --restart-window.", pool.policy.recent)
        states = GaugeMetricFamily(PREFIX + "sandboxes", "Sandbox processes by state.", labels=["state"])
        by_state: dict[str, int] = {"starting": 0, "ready": 0, "draining": 0}
        rss = GaugeMetricFamily(PREFIX + "sandbox_rss_bytes", "Resident memory of a sandbox (last sample).",
                                labels=["sandbox"])
        cpu = GaugeMetricFamily(PREFIX + "sandbox_cpu_percent", "CPU of a sandbox in percent of one core "
                                "(last sample).", labels=["sandbox"])
        load = GaugeMetricFamily(PREFIX + "sandbox_sessions", "Sessions hosted by a sandbox.", labels=["sandbox"])
        turns = CounterMetricFamily(PREFIX + "sandbox_turns", "Turns served by a sandbox.", labels=["sandbox"])
        for sandbox in sorted(pool.sandboxes.values(), key=lambda s: s.id):
            by_state[sandbox.state] = by_state.get(sandbox.state, 0) + 1
            label = [str(sandbox.id)]
            rss.add_metric(label, sandbox.rss)
            cpu.add_metric(label, sandbox.cpu)
            load.add_metric(label, sandbox.load)
            turns.add_metric(label, sandbox.turns)
        for state, count in sorted(by_state.items()):
            states.add_metric([state], count)
        yield states
        yield rss
        yield cpu
        yield load
        yield turns
        yield _gauge("sandbox_max_memory_bytes", "--max-memory (0 = no cap).", config.max_memory)
        yield _gauge("sandbox_max_cpu_percent", "--max-cpu (0 = no cap).", config.max_cpu)
        yield _counter("reloads", "Successful reloads of the agent file.", unit.reloads)


def _usage_families(m: Any) -> Iterator[Metric]:
    """Token usage by model, as the sandboxes reported it at the end of each turn (one agent's
    counters: merge_by_agent adds the ``agent`` label)."""
    by_model: dict[str, list] = {}
    for (_, model), row in m.usage.items():
        total = by_model.setdefault(model, [0] * len(row))
        for i, value in enumerate(row):
            total[i] += value
    tokens = CounterMetricFamily(PREFIX + "llm_tokens", "LLM tokens the provider reported, by type "
                                 "(prompt, completion).", labels=["model", "type"])
    requests = CounterMetricFamily(PREFIX + "llm_requests", "LLM requests made.", labels=["model"])
    unknown = CounterMetricFamily(PREFIX + "llm_requests_usage_unknown", "LLM requests whose provider reported "
                                  "no token usage (not counted in llm_tokens).", labels=["model"])
    llm_seconds = CounterMetricFamily(PREFIX + "llm_seconds", "Time spent in LLM requests.", labels=["model"])
    tool_seconds = CounterMetricFamily(PREFIX + "tool_seconds", "Time spent running tools.", labels=["model"])
    for model, row in sorted(by_model.items()):
        tokens.add_metric([model, "prompt"], row[0])
        tokens.add_metric([model, "completion"], row[1])
        requests.add_metric([model], row[3])
        unknown.add_metric([model], row[4])
        llm_seconds.add_metric([model], row[5])
        tool_seconds.add_metric([model], row[6])
    yield from (tokens, requests, unknown, llm_seconds, tool_seconds)
    yield _counter("turns_usage_unknown", "Turns whose usage never reached the front (their sandbox was lost).",
                   sum(m.usage_unknown_turns.values()))


def make_registry(server: "Server") -> CollectorRegistry:
    """A registry of this server alone: its collector and the front process's own process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    ProcessCollector(registry=registry)  # process_* of the front process (reads /proc at scrape time)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
