"""Agents while the server runs: start, watch, reload the changed ones, add and retire.

``--reload`` polls the agents' directories once a second; SIGHUP checks them
once. Only the agents whose files (or helper modules beside them) changed are
reloaded; a new agent file in a served directory starts a new agent, a removed
one retires its agent (its clients get a notice and a 1001 close, its pool
stops); the other agents are not touched. A SIGHUP that finds nothing changed
reloads every agent, as a SIGHUP always did.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from myagent.supervisor.agent_specs import AgentSpec, check_name, directory_agents, stem
from myagent.supervisor.agents import AgentUnit
from myagent.supervisor.environment import declared_line
from myagent.supervisor.exceptions import ConfigError, SupervisorError
from myagent.supervisor.reloader import changed_files, plan, snapshot_dirs

if TYPE_CHECKING:
    from myagent.supervisor.server import Server

log = logging.getLogger("myagent.supervisor.agents")

WATCH_INTERVAL = 1.0  # seconds between two looks at the agents' files under --reload
CLOSE_GOING_AWAY = 1001


class LiveAgents:
    def __init__(self, server: "Server", overrides: dict[str, dict]) -> None:
        self.server = server
        self.agents = server.agents
        self.overrides = overrides  # per-agent options of --config, for agents added later too
        self.seen: dict[str, float] = {}
        self._watchdogs: dict[str, asyncio.Task] = {}
        self._lock = asyncio.Lock()  # one reload at a time (a SIGHUP during a --reload poll)

    def _say(self, unit: AgentUnit, line: str) -> None:
        self.server.announce(line if len(self.agents) == 1 and not self.server.directories
                             else f"[{unit.name}] {line}")

    async def start_unit(self, unit: AgentUnit) -> None:
        """Load the agent file and fill the pool; AgentFileError if the file is broken."""
        await unit.run_task(self._start_unit(unit))

    async def _start_unit(self, unit: AgentUnit) -> None:
        self._say(unit, f"🔍 Loading agent file: {unit.config.agent_file}")
        agent = await unit.start()
        zygote = unit.pool.zygotes.current
        if zygote is not None and zygote.llm:
            self._say(unit, f"🧠 LLM: {zygote.llm}")
        tools = ", ".join(t["name"] for t in agent.get("tools", [])) or "no tools"
        self._say(unit, f"✅ Agent loaded: {agent.get('name')} ({tools}); {len(unit.pool.sandboxes)} sandbox(es), "
                        f"up to {unit.config.sessions_per_worker} sessions each")
        self._say(unit, unit.capacity_line())
        if unit.pool.declared:  # what is withheld is said once for all agents (Server.start)
            self._say(unit, declared_line(unit.pool.declared))

    def activate(self, unit: AgentUnit) -> None:
        if not self.seen:
            self.seen = self.snapshot()
        self._watchdogs[unit.name] = unit.run_task(unit.watchdog.run())

    def deactivate_all(self) -> None:
        for task in self._watchdogs.values():
            task.cancel()
        self._watchdogs.clear()

    def _directories(self) -> set[str]:
        return {os.path.dirname(unit.spec.path) for unit in self.agents} | set(self.server.directories)

    def snapshot(self) -> dict[str, float]:
        return snapshot_dirs(self._directories())

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                await self.reload("changed")
            except Exception:  # a bug here must not end the watching: the next change tries again
                log.exception("reloading the changed agents failed")

    async def reload(self, why: str, everything_if_unchanged: bool = False) -> None:
        async with self._lock:
            current = self.snapshot()
            changed = changed_files(self.seen, current)
            self.seen = current
            if not changed and not everything_if_unchanged:
                return
            listed = {}
            for directory in self.server.directories:
                try:
                    listed[directory] = directory_agents(directory)
                except ConfigError as exc:  # the directory went away: keep what runs
                    log.error("%s", exc)
            reload, added, retired = plan(changed, {u.name: u.spec.path for u in self.agents}, listed)
            if not changed:
                reload = {unit.name for unit in self.agents}
            shown = ", ".join(sorted(os.path.basename(p) for p in changed)[:5])
            for unit in self.agents:
                if unit.name in reload:
                    await unit.run_task(unit.reload(f"{why}: {shown}" if shown else why))
            for name in sorted(retired):
                await self.retire(self.agents.units[name])
            for path in added:
                await self.add(path)

    async def add(self, path: str) -> AgentUnit | None:
        """Serve a new agent file of a served directory; a broken one is logged and retried on its next change."""
        name = stem(path)
        try:
            check_name(name, path)
            if name in self.agents.units:
                raise ConfigError(f"{path}: an agent named {name!r} is already served")
        except ConfigError as exc:
            log.error("not serving %s", exc)
            return None
        unit = self.server.new_unit(AgentSpec(name, path, self.overrides.get(name, {})), False)
        try:
            await self.start_unit(unit)
        except SupervisorError as exc:
            log.error("new agent %s failed to load, not served: %s", name, exc)
            await unit.pool.stop()
            return None
        self.agents.units[name] = unit
        self.activate(unit)
        log.info("agent %s added (%s)", name, path)
        return unit

    async def retire(self, unit: AgentUnit) -> None:
        """Stop serving an agent whose file went away: its clients are told and closed, its pool stops."""
        log.info("agent %s retired: %s is gone", unit.name, unit.spec.path)
        unit.retiring = True  # new upgrades to its path get 404 from now on
        unit.router.broadcast_notice("This agent was removed from the server.", {"agent_removed": True})
        await unit.run_task(unit.drain(self.server.config.graceful_timeout))
        for conn in list(unit.router.connections.values()):
            conn.close(CLOSE_GOING_AWAY, "agent removed")
        task = self._watchdogs.pop(unit.name, None)
        if task is not None:
            task.cancel()
        await unit.pool.stop()
        self.agents.units.pop(unit.name, None)
