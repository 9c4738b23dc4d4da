"""The /status document: one stable JSON shape for people and scripts."""

from __future__ import annotations

import heapq
import time
from typing import TYPE_CHECKING, Any, Iterable

from myagent import __version__

if TYPE_CHECKING:
    from myagent.supervisor.server import Server
    from myagent.supervisor.sessions import Session

TOP_SESSIONS = 20  # sessions listed with their usage totals (the biggest spenders), to keep /status small


def agent_list(server: "Server") -> dict[str, Any]:
    """GET /agents: what the console's agent picker shows."""
    units = [unit for unit in server.agents if not unit.retiring]
    return {"agents": [{"name": unit.name, "path": "/" + unit.name, "agent_name": unit.pool.agent.get("name"),
                        "description": unit.pool.agent.get("description", ""), "ready": unit.readiness()[0]}
                       for unit in units],
            "default": units[0].name if len(units) == 1 else None}


def build(server: "Server") -> dict[str, Any]:
    """The document: server-wide keys, ``agents`` (one section per agent), and, for single-agent
    readers, the first agent's section at the top level too."""
    units = [unit for unit in server.agents if not unit.retiring]
    ready, reason = server.readiness()
    store = server.store
    sections = [agent_status(unit) for unit in units]
    first = {k: v for k, v in sections[0].items() if k not in ("name", "path")} if sections else {}
    return {
        **first,
        "version": __version__,
        "uptime_seconds": round(time.time() - server.started, 3),
        "ready": ready,
        "ready_reason": reason,
        "draining": server.draining,
        "connections": server.connection_count,
        "store": {"backend": store.name, "where": store.describe(), "healthy": store.health()[0],
                  "status": store.health()[1], "pending_writes": store.pending, "node_id": server.node_id},
        "agents": sections,
    }


def agent_status(unit: Any) -> dict[str, Any]:
    """One agent's section: its pool, sessions, counters and limits."""
    router, pool, metrics, c = unit.router, unit.pool, unit.metrics, unit.config
    ready, reason = unit.readiness()
    detached = running = queued = 0
    sessions = router.registry.sessions.values()
    for session in sessions:  # one pass: /status must stay cheap at 10k sessions
        if session.connection is None:
            detached += 1
        if session.turn is not None:
            running += 1
        queued += len(session.inbox)
    connections = router.connections.values()
    now = time.monotonic()
    return {
        "name": unit.name,
        "path": "/" + unit.name,
        "ready": ready,
        "ready_reason": reason,
        "draining": router.draining,
        "agent": {"name": pool.agent.get("name"), "description": pool.agent.get("description", ""),
                  "tools": [t["name"] for t in pool.agent.get("tools", [])], "file": c.agent_file,
                  "env": list(pool.declared)},
        # Names (never values) of the variables the sandboxes get: allow list, --sandbox-env, declared.
        "sandbox_env": sorted(pool.env),
        "connections": len(router.connections),
        "outbound_queued_bytes": sum(conn.queued_bytes for conn in connections),
        "sessions": {"total": len(router.registry), "active": len(router.registry) - detached,
                     "detached": detached,
                     "turns_running": running, "messages_queued": queued},
        "sandboxes": [
            {"id": s.id, "pid": s.pid, "state": s.state, "sessions": s.load, "turns_served": s.turns,
             "uptime_seconds": round(now - s.started, 3),
             "heartbeat_age_seconds": round(now - s.last_beat, 3),
             # last watchdog sample (every --watch-interval), so /status costs no syscalls
             "rss_bytes": s.rss, "cpu_percent": round(s.cpu, 1),
             "procs": s.procs, "tasks": s.tasks, "containment": s.containment,
             "kill_reason": s.kill_reason, "kill_rung": s.kill_rung, "frames_rejected": s.offences}
            for s in pool.sandboxes.values()
        ],
        # The last sandboxes lost (not retired), newest last, with how they ended.
        "recent_losses": [
            {"id": s.id, "pid": s.pid, "reason": s.kill_reason or "SANDBOX_CRASHED", "rung": s.kill_rung,
             "exit": s.exit_text, "seconds_ago": round(now - s.lost_at, 3) if s.lost_at else None}
            for s in pool.losses
        ],
        "zygote_pid": pool.zygotes.current.pid if pool.zygotes.current else None,
        "containment": unit.watchdog.containment,
        "reload": {"reloads": unit.reloads, "last_error": unit.reload_error},
        "restarts": {"total": pool.policy.total, "recent": pool.policy.recent,
                     "by_reason": dict(pool.restarts_by_reason), "unavailable_reason": pool.unavailable_reason},
        "totals": {"connections_opened": metrics.connections_opened,
                   "connections_closed": metrics.connections_closed,
                   "connections_refused": dict(metrics.connections_refused),
                   "sessions_created": metrics.sessions_created, "sessions_closed": metrics.sessions_closed,
                   "sessions_restored": metrics.sessions_restored, "turns_started": metrics.turns_started,
                   "sessions_quarantined": metrics.sessions_quarantined, "sessions_evicted": metrics.sessions_evicted,
                   "turns_ended": dict(metrics.turns_ended), "interrupted_by_reason": dict(metrics.interrupted),
                   "errors_by_code": dict(metrics.errors), "frames_in": metrics.frames_in,
                   "sandbox_frames_rejected": dict(metrics.frames_rejected),
                   "events_sent": metrics.events_sent_closed + sum(conn.sent for conn in connections)},
        "latency": metrics.latency_summary(),
        "usage": usage_section(unit, sessions),
        "capacity": {"sessions": min(unit.placement.capacity, c.max_sessions),
                     "free_slots": unit.placement.free_slots, "max_sandboxes": pool.max_size},
        "limits": {"workers": len(pool.sandboxes), "sessions_per_worker": c.sessions_per_worker,
                   "max_connections": c.max_connections, "max_sessions": c.max_sessions,
                   "max_sessions_per_connection": c.max_sessions_per_connection,
                   "max_message_size": c.max_message_size, "max_user_message_chars": c.max_user_message_chars,
                   "turn_timeout": c.turn_timeout, "worker_timeout": c.worker_timeout,
                   "max_memory": c.max_memory, "max_cpu": c.max_cpu, "sandbox_max_procs": c.sandbox_max_procs,
                   "max_turns_per_worker": c.max_turns_per_worker,
                   "session_ttl": c.session_ttl},
    }


def usage_section(unit: Any, sessions: Iterable["Session"]) -> dict[str, Any]:
    """Token usage: counters by agent and model since start, the live sessions' totals (the
    ``TOP_SESSIONS`` biggest spenders listed), and the budgets in force."""
    metrics, budgets = unit.metrics, unit.budgets
    top = heapq.nlargest(TOP_SESSIONS, (s for s in sessions if s.usage.turns), key=lambda s: s.usage.total_tokens)
    return {
        "by_model": [
            {"agent": agent, "model": model, "prompt_tokens": row[0], "completion_tokens": row[1],
             "total_tokens": row[2], "llm_requests": row[3], "unknown_requests": row[4],
             "llm_seconds": round(row[5], 3), "tool_seconds": round(row[6], 3)}
            for (agent, model), row in sorted(metrics.usage.items())
        ],
        "unknown_turns": sum(metrics.usage_unknown_turns.values()),
        "top_sessions": [{"session_id": s.id, "owner": s.owner, **s.usage.as_dict()} for s in top],
        "budgets": {"tokens_per_day": budgets.per_day, "max_tokens_per_turn": budgets.per_turn,
                    "turns_refused_before_dispatch": budgets.refused, "store_errors": budgets.store_errors},
    }
