"""The front process: WebSockets and HTTP on one port, the agents behind them.

Each agent (one per agent file, see agents.py) has its own zygote, pool and
sessions; the server owns what they share: the listening socket, the guard,
the HTTP endpoints and the session store. Lifecycle: bind the ports (a port in
use stops us before any sandbox starts), load each agent in its zygote (a broken
file stops us before we serve), fill the pools, serve. On SIGTERM/SIGINT: /ready turns 503 and
upgrades are refused, running turns get ``--graceful-timeout`` to finish,
clients are closed with 1001, sandboxes are stopped, exit 0. A second signal
exits at once. Signal handlers only set flags; this loop does the work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections import Counter
from typing import Any, Callable

from websockets.asyncio.server import ServerConnection, serve

from myagent import otel
from myagent.supervisor.agent_specs import AgentSpec, stem, with_overrides
from myagent.supervisor.agents import Agents, AgentUnit
from myagent.supervisor.environment import prepare, withheld, withheld_hint
from myagent.supervisor.exceptions import ConfigError
from myagent.supervisor.guard import Guard, HostCheck, exposed_to_others, load_tokens, needs_auth_warning
from myagent.supervisor.budgets import Budgets
from myagent.supervisor.http import HttpEndpoints
from myagent.supervisor.inbound import serve_connection
from myagent.supervisor.live_agents import LiveAgents
from myagent.supervisor.listen import bind_error, tls_context
from myagent.supervisor.state_export import load_secret, state_secret
from myagent.supervisor.store import MemoryStore, StoreError, default_state_dir, open_store
from myagent.supervisor.tuning import not_dumpable, raise_open_files_limit, tune_gc

log = logging.getLogger("myagent.supervisor")

CLOSE_GOING_AWAY = 1001


class Server:
    def __init__(self, config: Any, announce: Callable[[str], None] = print,
                 agents: list[AgentSpec] | None = None, directories: list[str] | None = None,
                 overrides: dict[str, dict] | None = None) -> None:
        self.config = config
        self.announce = announce
        self.state_dir = config.state_dir or default_state_dir()
        store_url = config.store
        if store_url in ("sqlite://", "sqlite:///"):  # the default file lives in the state directory
            store_url = "sqlite://" + os.path.join(os.path.abspath(self.state_dir), "sessions.db")
        try:
            self.store = open_store(store_url, history_limit=config.max_history_messages,
                                    events_limit=config.replay_buffer) if store_url else MemoryStore()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.node_id = config.node_id or f"{socket.gethostname()}-{os.getpid()}"
        try:
            self.state_secret = load_secret(state_secret(config), self.state_dir)
        except OSError as exc:
            raise ConfigError(f"--state-dir {self.state_dir}: cannot keep the state secret there: "
                              f"{exc.strerror or exc}") from None
        # Token budgets are the holder's (auth token or session), whichever agent spends them.
        self.budgets = Budgets(config.budget_tokens_per_day, config.max_tokens_per_turn, self.store)
        specs = agents or [AgentSpec(stem(config.agent_file), config.agent_file)]
        self.directories = directories or []
        # One agent file alone keys its stored sessions as before (see AgentUnit.start).
        self.agents = Agents(self.new_unit, with_overrides(specs, overrides or {}),
                             single=len(specs) == 1 and not self.directories)
        self.refused_unrouted: Counter[str] = Counter()  # upgrades refused before a path named an agent
        self.http = HttpEndpoints(self)
        self.trusted_proxies = frozenset(config.trusted_proxy or ())
        self.guard = Guard(load_tokens(config.auth_token or (), config.auth_tokens_file), config.allow_origin or (),
                           config.max_connections_per_address, HostCheck(config.allow_host or (), config.host))
        self.draining = False
        self.started = time.time()
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._ws_server: Any = None
        self.live = LiveAgents(self, overrides or {})

    def new_unit(self, spec: AgentSpec, single: bool) -> AgentUnit:
        return AgentUnit(spec, self.config, self.store, self.node_id, self.state_secret, single, self.budgets)

    # The first agent's parts, for single-agent callers (and tests) that name them directly.
    pool = property(lambda self: self.agents.first.pool)
    router = property(lambda self: self.agents.first.router)
    registry = property(lambda self: self.agents.first.registry)
    metrics = property(lambda self: self.agents.first.metrics)
    placement = property(lambda self: self.agents.first.placement)
    turns = property(lambda self: self.agents.first.turns)
    recovery = property(lambda self: self.agents.first.recovery)
    watchdog = property(lambda self: self.agents.first.watchdog)
    reload_error = property(lambda self: self.agents.first.reload_error)

    @property
    def reloads(self) -> int:
        return sum(unit.reloads for unit in self.agents)

    @property
    def connection_count(self) -> int:
        return sum(len(unit.router.connections) for unit in self.agents)

    def readiness(self) -> tuple[bool, str]:
        """Ready while every agent served can take a session; else why, naming each agent that cannot
        (one agent: its reason alone, as before). An agent being retired no longer counts."""
        if self.draining:
            return False, "draining"
        serving = [unit for unit in self.agents if not unit.retiring]
        if not serving:
            return False, "no agent is served (the served directories hold no agent file)"
        not_ready = [(unit.name, why) for unit in serving for ok, why in [unit.readiness()] if not ok]
        if not_ready:
            if len(serving) == 1:
                return False, not_ready[0][1]
            return False, "; ".join(f"agent {name}: {why}" for name, why in not_ready)
        healthy, why = self.store.health()
        if not healthy:
            return False, f"session store: {why}"
        return True, "ok"

    async def handle(self, ws: ServerConnection) -> None:
        # process_request picked the agent from the path; a unit retired meanwhile closes it at once.
        unit = getattr(ws, "agent_unit", None) or self.agents.first
        if unit.retiring:
            await ws.close(1001, "agent removed")
            return
        await serve_connection(self, unit, ws)

    # Lifecycle -------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting now")
            self._hard_exit()
        self._stop.set()

    def _hard_exit(self) -> None:
        for unit in self.agents:
            unit.pool.kill_now()
        os._exit(1)

    def request_stop(self) -> None:
        self._stop.set()

    def _on_hup(self) -> None:
        asyncio.get_running_loop().create_task(self.live.reload("SIGHUP", everything_if_unchanged=True))

    async def start(self) -> None:
        """Bind, load the agents, fill their pools, serve. ConfigError (a port in use, a TLS file that
        does not load) comes before any sandbox starts; AgentFileError for a broken agent file."""
        c = self.config
        raise_open_files_limit(c.max_connections)
        # Same-user agent code must not read our environment (auth tokens) or memory via /proc.
        not_dumpable()
        ssl_context = tls_context(c.tls_cert, c.tls_key)
        await self._bind(ssl_context)
        for unit in self.agents:  # a declared variable missing: refused before anything starts
            prepare(unit.config.agent_file, unit.config.sandbox_env or ())
        try:
            await self.store.start()
        except StoreError as exc:
            raise ConfigError(f"session store {c.store}: {exc}") from None
        if self.store.durable:
            self.announce(f"💾 Sessions stored in {self.store.name}: {self.store.describe()}")
        # The agents load side by side (each in its own zygote); one broken file stops them all.
        results = await asyncio.gather(*(self.live.start_unit(unit) for unit in self.agents), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.stop_pools()
            raise failed[0]
        names = withheld(set().union(*(unit.pool.env for unit in self.agents)))
        if names:  # credentials no agent gets, named once (never their values)
            self.announce(withheld_hint(names))
        if needs_auth_warning(c.host, self.guard.auth_enabled):
            self.announce(f"⚠️  WARNING: listening on {c.host} without authentication: anyone who can reach "
                          "this port can use the agent. Set MYAGENT_WS_AUTH_TOKENS or --auth-tokens-file.")
        for option, path in (("--auth-tokens-file", c.auth_tokens_file), ("--state-secret-file", c.state_secret_file)):
            mode = exposed_to_others(path) if path else ""
            if mode:
                self.announce(f"⚠️  WARNING: {option} {path} is open to other users (mode {mode}): chmod 600 it.")
        self.announce(f"🛡️  {self.guard.hosts.describe()}")
        try:  # listen(): a server that bound the same port meanwhile (SO_REUSEADDR) takes it first
            await self._ws_server.start_serving()
        except OSError as exc:
            raise bind_error(exc, c.host, self.port) from None
        scheme = "wss" if ssl_context else "ws"
        tune_gc()
        self.announce(f"🚀 myagent-ws listening on {scheme}://{c.host}:{self.port}  "
                      f"(health: {'https' if ssl_context else 'http'}://{c.host}:{self.port}/health)")
        if len(self.agents) > 1:
            self.announce("🧭 Agents: " + "  ".join(f"{scheme}://{c.host}:{self.port}/{unit.name}"
                                                    for unit in self.agents))
        if c.status_port:
            await self.http.start_status_port()
            self.announce(f"📊 status port: http://{c.host}:{self.http.status_port}/status (also /health /ready "
                          "/metrics /dashboard)")

    async def _bind(self, ssl_context: Any) -> None:
        """Bind the main port and the --status-port without serving yet: a port in use or a foreign
        address stops the start here, before the agent is loaded."""
        c = self.config
        try:
            self._ws_server = await serve(
                self.handle, c.host, c.port,
                process_request=self.http.process_request,
                compression="deflate" if c.compression == "deflate" else None,
                max_size=c.max_message_size,
                open_timeout=c.open_timeout or None,
                ping_interval=c.ping_interval or None,
                ping_timeout=c.ping_timeout or None,
                close_timeout=c.close_timeout or None,
                server_header=None,
                ssl=ssl_context,
                start_serving=False,
            )
        except OSError as exc:
            raise bind_error(exc, c.host, c.port) from None
        self.port = self._ws_server.sockets[0].getsockname()[1]
        if c.status_port:
            try:
                await self.http.bind_status_port(c.host, c.status_port)
            except OSError as exc:
                raise bind_error(exc, c.host, c.status_port, "--status-port") from None

    async def stop_pools(self) -> None:
        for unit in self.agents:
            await unit.pool.stop()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            await self.start()
            for unit in self.agents:
                self.live.activate(unit)
            tasks = [loop.create_task(self._tick())]
            if self.config.reload:
                tasks.append(loop.create_task(self.live.watch()))
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await self.drain()
        finally:
            self.live.deactivate_all()
            await self.stop_pools()
            await self.budgets.drain()
            await self.store.stop()
            await self.http.close()
            otel.stop()  # the last turns' spans, bounded by otel.FLUSH_TIMEOUT
        return 0

    async def _tick(self) -> None:
        """Periodic work: heartbeats to clients and the detached-session sweep."""
        c = self.config
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time() + (c.heartbeat_interval or float("inf"))
        next_store_work = loop.time()
        while True:
            await asyncio.sleep(0.5)
            now = loop.time()
            heartbeat = now >= next_heartbeat
            if heartbeat:
                next_heartbeat = now + c.heartbeat_interval
            for unit in self.agents:
                unit.tick(heartbeat)
            if now >= next_store_work and self.store.durable:
                next_store_work = now + 2.0
                for unit in self.agents:
                    await self._store_work(unit)

    async def _store_work(self, unit: AgentUnit) -> None:
        """Renew this node's leases and drop stored sessions idle longer than --session-ttl."""
        registry = unit.registry
        try:
            leased = [sid for sid, session in registry.sessions.items() if session.leased]
            for sid in await self.store.renew(leased, self.node_id, self.config.lease_ttl):
                session = registry.get(sid)
                if session is not None:  # another node took it over (our lease lapsed): let go
                    log.warning("session %s is now owned by another node; dropping this node's copy", sid)
                    unit.recovery.forget(session)
            if unit is self.agents.first:  # the store is shared: one sweep, for sessions no agent holds
                for sid in await self.store.expired(time.time() - self.config.session_ttl):
                    if all(u.registry.get(sid) is None for u in self.agents):
                        self.store.delete(sid)
        except Exception as exc:  # reported through store.health(); the loop goes on
            log.warning("store maintenance failed: %s", exc)

    async def drain(self) -> None:
        """Graceful stop: refuse new work, let turns finish, close clients with 1001."""
        grace = self.config.graceful_timeout
        units = list(self.agents)
        log.info("draining: %d connections, %d sessions, %d turns running; waiting up to %gs "
                 "(--graceful-timeout) for them to finish. Press Ctrl-C again (or send a second "
                 "signal) to exit now.", sum(len(u.router.connections) for u in units),
                 sum(len(u.registry) for u in units),
                 sum(1 for u in units for s in u.registry.sessions.values() if s.turn is not None), grace)
        self.draining = True
        await asyncio.gather(*(unit.run_task(unit.drain(grace)) for unit in units))
        if self._ws_server is not None:
            self._ws_server.close(close_connections=True)
            try:
                await asyncio.wait_for(self._ws_server.wait_closed(), 5.0)
            except TimeoutError:
                log.warning("some connections did not close in time")
