"""The agents of one server: one AgentUnit per agent file, and the name -> unit map.

An AgentUnit is what a single-agent server builds once: a zygote and sandbox
pool with its own restart budget and caps, the sessions of that agent, and the
core wired around them (Placement, Turns, Recovery, Relay, Router), with its
own counters. Nothing is shared between units except the session store, the
listening socket and the guard in front of it, so an agent that keeps crashing
spends only its own budget. The connection handshake picks the unit from the
URL path (``Agents.route``); everything after it sees one unit only.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from typing import Any, Callable

from myagent.logs import AGENT
from myagent.protocol.errors import ErrorCode
from myagent.settings import resolve_workers
from myagent.supervisor.agent_specs import AgentSpec
from myagent.supervisor.budgets import Budgets
from myagent.supervisor.environment import prepare
from myagent.supervisor.exceptions import AgentFileError
from myagent.supervisor.metrics import Metrics
from myagent.supervisor.placement import Placement
from myagent.supervisor.pool import SandboxPool
from myagent.supervisor.recovery import Recovery
from myagent.supervisor.relay import Relay
from myagent.supervisor.router import Router
from myagent.supervisor.sessions import Limits, SessionRegistry
from myagent.supervisor.tracing import turn_traces
from myagent.supervisor.turns import Turns
from myagent.supervisor.watchdog import Watchdog

log = logging.getLogger("myagent.supervisor.agents")


class AgentUnit:
    def __init__(self, spec: AgentSpec, base_config: Any, store: Any, node_id: str, state_secret: bytes,
                 single: bool, budgets: Any = None) -> None:
        self.spec = spec
        self.name = spec.name
        # With several agents, stored sessions and state exports are keyed by the unique route name;
        # alone, by the agent's declared name, as before (existing stores keep working).
        self.single = single
        # Work done for this agent runs in this context: its log records name the agent (not
        # needed with one agent file, whose logs read as before).
        self.log_name = "" if single else spec.name
        self.context = contextvars.copy_context()
        self.context.run(AGENT.set, self.log_name)
        self.config = config = spec.config(base_config)
        self.store = store
        self.node_id = node_id
        self.metrics = Metrics()
        self.registry = SessionRegistry(Limits(config.max_history_messages, config.max_history_bytes,
                                               config.replay_buffer, config.replay_buffer_bytes), store)
        # The zygote's environment is prepared anew for each zygote: a reload may declare other names.
        self.pool = SandboxPool(config, resolve_workers(config),
                                functools.partial(prepare, config.agent_file, config.sandbox_env or ()))
        # The core, wired once: Placement owns the session <-> sandbox binding, Turns what runs,
        # Recovery keeps sessions alive, Relay is the sandbox -> client hot path, Router the
        # client -> server side.
        self.placement = Placement(self.pool, config, self.metrics)
        self.budgets = budgets if budgets is not None else Budgets(0, 0, store)  # shared by the server's agents
        self.turns = Turns(config, self.metrics, self.placement, self.pool, self.budgets)
        self.recovery = Recovery(config, self.registry, self.placement, self.turns, self.pool, self.metrics,
                                 store, node_id)
        self.relay = Relay(self.placement, self.turns, config.sandbox_max_event_size)
        self.router = Router(config, self.pool, self.registry, self.metrics, self.placement, self.turns,
                             self.recovery, store, state_secret, node_id)
        self.router.agent_route = spec.name
        self.turns.on_idle = self.recovery.idle
        self.turns.on_unplaced = self.recovery.restore
        self.pool.on_ready = lambda sandbox: self.recovery.migrate_idle()
        self.pool.on_lost = self.recovery.on_sandbox_lost
        self.pool.on_control = self.placement.on_control
        self.pool.on_data = self.relay.on_data
        self.watchdog = Watchdog(self.pool, config)
        self.reload_error: str | None = None
        self.reloads = 0
        self.retiring = False

    async def start(self) -> dict[str, Any]:
        """Load the agent in a zygote and fill the pool. Raises AgentFileError."""
        agent = await self.pool.start()
        self.registry.agent = agent.get("name", "") if self.single else self.name
        self.turns.traces = turn_traces(lambda: self.registry.agent)  # None unless OTEL_EXPORTER_OTLP_* is set
        return agent

    def readiness(self) -> tuple[bool, str]:
        if self.router.draining:
            return False, "draining"
        if self.pool.unavailable_reason:
            return False, self.pool.unavailable_reason
        if not self.pool.ready_count:
            return False, "no sandbox is ready"
        if len(self.registry) >= self.config.max_sessions or not self.placement.can_place():
            return False, "no room for a new session (every sandbox is full)"
        return True, "ok"

    def capacity_line(self) -> str:
        c, pool = self.config, self.pool
        capacity = min(self.placement.capacity, c.max_sessions)
        grows = f", growing to {pool.max_size} sandboxes on demand" if pool.max_size > pool.size else ""
        if capacity >= min(c.max_sessions, 100):
            return f"📦 Capacity: {capacity} sessions{grows}"
        hint = "" if grows else " Raise --max-sandboxes to spawn sandboxes on demand."
        return (f"⚠️  Capacity: only {capacity} sessions at once ({pool.max_size} sandbox(es) x --sessions-per-worker "
                f"{c.sessions_per_worker}{grows}); more get SERVER_BUSY.{hint}")

    async def reload(self, why: str) -> bool:
        """Rolling reload: new zygote, fresh sandboxes, sessions move over with their history."""
        log.info("reloading %s (%s)", self.config.agent_file, why)
        try:
            agent = await self.pool.reload()
        except AgentFileError as exc:
            self.reload_error = str(exc)
            log.error("reload failed, the previous version keeps serving: %s", exc)
            self.router.broadcast_notice("The agent file failed to reload; the previous version keeps serving.",
                                         {"reload_failed": True, "reason": str(exc)[:500]})
            return False
        self.reload_error = None
        self.reloads += 1
        self.recovery.migrate_idle()
        log.info("reloaded: agent %s", agent.get("name"))
        self.router.broadcast_notice("The agent was reloaded.", {"reloaded": True})
        return True

    def run_task(self, coro: Any) -> asyncio.Task:
        """A task of this agent (its log records name it)."""
        return asyncio.get_running_loop().create_task(coro, context=self.context)

    def tick(self, heartbeat: bool) -> None:
        """Periodic work: heartbeats, the detached-session sweep, idle connections, pool shrinking."""
        self.context.run(self._tick, heartbeat)

    def _tick(self, heartbeat: bool) -> None:
        if heartbeat:
            self.router.heartbeat()
        self.router.sweep()
        self.close_idle()
        if self.pool.max_size > self.pool.size:
            self.pool.shrink(time.monotonic())

    def close_idle(self) -> None:
        """Close connections that sent nothing for --idle-timeout and have no turn running."""
        limit = self.config.idle_timeout
        if limit <= 0:
            return
        now = time.monotonic()
        for conn in list(self.router.connections.values()):
            if now - conn.last_inbound > limit and not any(
                    (s := self.registry.get(sid)) is not None and s.turn is not None for sid in conn.sessions):
                log.info("connection %s idle for %.0fs: closing", conn.id, now - conn.last_inbound)
                conn.close(1000, "idle timeout")

    async def drain(self, graceful_timeout: float) -> None:
        """Refuse new work, let turns finish (at most ``graceful_timeout``), close clients with 1001."""
        registry, turns = self.registry, self.turns
        self.router.draining = True
        turns.draining = True
        self.placement.stop_opening()  # an open in flight would hold its connection's close
        self.router.broadcast_notice(f"The server is shutting down; running turns get up to {graceful_timeout:g}s "
                                     "to finish.", {"draining": True, "graceful_timeout": graceful_timeout})
        for session in registry.sessions.values():  # what waits would only be cancelled
            turns.drop_queue(session, ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + graceful_timeout
        while any(s.turn is not None for s in registry.sessions.values()) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in registry.sessions.values():
            turns.cancel(session, ErrorCode.SHUTTING_DOWN)
        await asyncio.sleep(0.1 if any(s.turn for s in registry.sessions.values()) else 0)
        for conn in list(self.router.connections.values()):
            await conn.drain(0.5)


class Agents:
    """name -> AgentUnit, in the order they were given; the first answers ``/`` while it is alone."""

    def __init__(self, make: Callable[[AgentSpec, bool], AgentUnit], specs: list[AgentSpec], single: bool) -> None:
        self.units: dict[str, AgentUnit] = {spec.name: make(spec, single) for spec in specs}

    def __iter__(self):
        return iter(list(self.units.values()))

    def __len__(self) -> int:
        return len(self.units)

    @property
    def first(self) -> AgentUnit:
        return next(iter(self.units.values()))

    def route(self, path: str) -> AgentUnit | None:
        """The unit serving an upgrade's path (query already removed): ``/<name>``, or ``/`` alone."""
        name = path.strip("/")
        if not name:
            serving = [unit for unit in self.units.values() if not unit.retiring]
            return serving[0] if len(serving) == 1 else None
        unit = self.units.get(name)
        return unit if unit is not None and not unit.retiring else None

    def names(self) -> list[str]:
        return [name for name, unit in self.units.items() if not unit.retiring]
