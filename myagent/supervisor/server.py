"""The front process: WebSockets and HTTP on one port, the pool behind them.

Lifecycle: load the agent in the zygote (a broken file stops us before we
listen), fill the pool, listen, serve. On SIGTERM/SIGINT: /ready turns 503 and
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
from typing import Any, Callable

from websockets.asyncio.server import ServerConnection, serve

from myagent import otel
from myagent.protocol.errors import ErrorCode
from myagent.settings import resolve_workers
from myagent.supervisor.environment import absolute_llm_paths, sandbox_environment
from myagent.supervisor.exceptions import AgentFileError, ConfigError
from myagent.supervisor.guard import Guard, HostCheck, exposed_to_others, load_tokens, needs_auth_warning
from myagent.supervisor.http import HttpEndpoints
from myagent.supervisor.inbound import serve_connection
from myagent.supervisor.metrics import Metrics
from myagent.supervisor.placement import Placement
from myagent.supervisor.pool import SandboxPool
from myagent.supervisor.recovery import Recovery
from myagent.supervisor.relay import Relay
from myagent.supervisor.reloader import changed_files, snapshot
from myagent.supervisor.router import Router
from myagent.supervisor.sessions import Limits, SessionRegistry
from myagent.supervisor.state_export import load_secret, state_secret
from myagent.supervisor.store import MemoryStore, StoreError, default_state_dir, open_store
from myagent.supervisor.tracing import turn_traces
from myagent.supervisor.tuning import not_dumpable, raise_open_files_limit, tune_gc
from myagent.supervisor.turns import Turns
from myagent.supervisor.watchdog import Watchdog

log = logging.getLogger("myagent.supervisor")

CLOSE_GOING_AWAY = 1001


class Server:
    def __init__(self, config: Any, announce: Callable[[str], None] = print) -> None:
        self.config = config
        self.announce = announce
        self.metrics = Metrics()
        self.state_dir = config.state_dir or default_state_dir()
        store_url = config.store
        if store_url in ("sqlite://", "sqlite:///"):  # the default file lives in the state directory
            store_url = "sqlite://" + os.path.join(os.path.abspath(self.state_dir), "sessions.db")
        self.store = open_store(store_url, history_limit=config.max_history_messages,
                                events_limit=config.replay_buffer) if store_url else MemoryStore()
        self.node_id = config.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.registry = SessionRegistry(Limits(config.max_history_messages, config.max_history_bytes,
                                               config.replay_buffer, config.replay_buffer_bytes), self.store)
        self.pool = SandboxPool(config, resolve_workers(config), absolute_llm_paths(sandbox_environment(
                                    config.sandbox_env or ())))
        # The core, wired once: Placement owns the session <-> sandbox binding, Turns what runs,
        # Recovery keeps sessions alive, Relay is the sandbox -> client hot path, Router the
        # client -> server side.
        self.placement = Placement(self.pool, config, self.metrics)
        self.turns = Turns(config, self.metrics, self.placement, self.pool)
        self.recovery = Recovery(config, self.registry, self.placement, self.turns, self.pool, self.metrics,
                                 self.store, self.node_id)
        self.relay = Relay(self.placement, self.turns, config.sandbox_max_event_size)
        self.router = Router(config, self.pool, self.registry, self.metrics, self.placement, self.turns,
                             self.recovery, self.store, load_secret(state_secret(config), self.state_dir), self.node_id)
        self.turns.on_idle = self.recovery.idle
        self.turns.on_unplaced = self.recovery.restore
        self.pool.on_ready = lambda sandbox: self.recovery.migrate_idle()
        self.pool.on_lost = self.recovery.on_sandbox_lost
        self.pool.on_control = self.placement.on_control
        self.pool.on_data = self.relay.on_data
        self.watchdog = Watchdog(self.pool, config)
        self.reload_error: str | None = None
        self.http = HttpEndpoints(self)
        self.trusted_proxies = frozenset(config.trusted_proxy or ())
        self.guard = Guard(load_tokens(config.auth_token or (), config.auth_tokens_file), config.allow_origin or (),
                           config.max_connections_per_address, HostCheck(config.allow_host or (), config.host))
        self.reloads = 0
        self.started = time.time()
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._ws_server: Any = None

    def readiness(self) -> tuple[bool, str]:
        if self.router.draining:
            return False, "draining"
        if self.pool.unavailable_reason:
            return False, self.pool.unavailable_reason
        if not self.pool.ready_count:
            return False, "no sandbox is ready"
        if len(self.registry) >= self.config.max_sessions or not self.placement.can_place():
            return False, "no room for a new session (every sandbox is full)"
        healthy, why = self.store.health()
        if not healthy:
            return False, f"session store: {why}"
        return True, "ok"

    def _capacity_line(self) -> str:
        c, pool = self.config, self.pool
        capacity = min(self.placement.capacity, c.max_sessions)
        grows = f", growing to {pool.max_size} sandboxes on demand" if pool.max_size > pool.size else ""
        if capacity >= min(c.max_sessions, 100):
            return f"📦 Capacity: {capacity} sessions{grows}"
        hint = "" if grows else " Raise --max-sandboxes to spawn sandboxes on demand."
        return (f"⚠️  Capacity: only {capacity} sessions at once ({pool.max_size} sandbox(es) x --sessions-per-worker "
                f"{c.sessions_per_worker}{grows}); more get SERVER_BUSY.{hint}")

    async def handle(self, ws: ServerConnection) -> None:
        await serve_connection(self, ws)

    # Lifecycle -------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting now")
            self._hard_exit()
        self._stop.set()

    def _hard_exit(self) -> None:
        self.pool.kill_now()
        os._exit(1)

    def request_stop(self) -> None:
        self._stop.set()

    def _on_hup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload("SIGHUP"))

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

    async def _watch_files(self) -> None:
        seen = snapshot(self.config.agent_file)
        while True:
            await asyncio.sleep(1.0)
            current = snapshot(self.config.agent_file)
            changed = changed_files(seen, current)
            seen = current
            if changed:
                await self.reload("changed: " + ", ".join(sorted(changed)[:5]))

    async def start(self) -> None:
        """Load the agent, fill the pool and listen. Raises AgentFileError for a broken agent file."""
        c = self.config
        raise_open_files_limit(c.max_connections)
        # Same-user agent code must not read our environment (auth tokens) or memory via /proc.
        not_dumpable()
        self.announce(f"🔍 Loading agent file: {c.agent_file}")
        agent = await self.pool.start()
        if self.pool.zygotes.current is not None and self.pool.zygotes.current.llm:
            self.announce(f"🧠 LLM: {self.pool.zygotes.current.llm}")
        self.registry.agent = agent.get("name", "")
        self.turns.traces = turn_traces(lambda: self.registry.agent)  # None unless OTEL_EXPORTER_OTLP_* is set
        try:
            await self.store.start()
        except StoreError as exc:
            await self.pool.stop()
            raise ConfigError(f"session store {c.store}: {exc}") from None
        if self.store.durable:
            self.announce(f"💾 Sessions stored in {self.store.name}: {self.store.describe()}")
        tools = ", ".join(t["name"] for t in agent.get("tools", [])) or "no tools"
        self.announce(f"✅ Agent loaded: {agent.get('name')} ({tools}); "
                      f"{len(self.pool.sandboxes)} sandbox(es), up to {c.sessions_per_worker} sessions each")
        self.announce(self._capacity_line())
        ssl_context = None
        if c.tls_cert:
            import ssl

            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(c.tls_cert, c.tls_key or None)
        if needs_auth_warning(c.host, self.guard.auth_enabled):
            self.announce(f"⚠️  WARNING: listening on {c.host} without authentication: anyone who can reach "
                          "this port can use the agent. Set MYAGENT_WS_AUTH_TOKENS or --auth-tokens-file.")
        for option, path in (("--auth-tokens-file", c.auth_tokens_file), ("--state-secret-file", c.state_secret_file)):
            mode = exposed_to_others(path) if path else ""
            if mode:
                self.announce(f"⚠️  WARNING: {option} {path} is open to other users (mode {mode}): chmod 600 it.")
        self.announce(f"🛡️  {self.guard.hosts.describe()}")
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
        )
        self.port = self._ws_server.sockets[0].getsockname()[1]
        scheme = "wss" if ssl_context else "ws"
        tune_gc()
        self.announce(f"🚀 myagent-ws listening on {scheme}://{c.host}:{self.port}  "
                      f"(health: {'https' if ssl_context else 'http'}://{c.host}:{self.port}/health)")
        if c.status_port:
            status_port = await self.http.start_status_port(c.host, c.status_port)
            self.announce(f"📊 status port: http://{c.host}:{status_port}/status (also /health /ready /metrics "
                          "/dashboard)")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            await self.start()
            tasks = [loop.create_task(self._tick()), loop.create_task(self.watchdog.run())]
            if self.config.reload:
                tasks.append(loop.create_task(self._watch_files()))
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await self.drain()
        finally:
            await self.pool.stop()
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
            if now >= next_heartbeat:
                self.router.heartbeat()
                next_heartbeat = now + c.heartbeat_interval
            self.router.sweep()
            self.close_idle()
            if self.pool.max_size > self.pool.size:
                self.pool.shrink(time.monotonic())
            if now >= next_store_work and self.store.durable:
                next_store_work = now + 2.0
                await self._store_work()

    async def _store_work(self) -> None:
        """Renew this node's leases and drop stored sessions idle longer than --session-ttl."""
        try:
            leased = [sid for sid, session in self.registry.sessions.items() if session.leased]
            for sid in await self.store.renew(leased, self.node_id, self.config.lease_ttl):
                session = self.registry.get(sid)
                if session is not None:  # another node took it over (our lease lapsed): let go
                    log.warning("session %s is now owned by another node; dropping this node's copy", sid)
                    self.recovery.forget(session)
            for sid in await self.store.expired(time.time() - self.config.session_ttl):
                if self.registry.get(sid) is None:
                    self.store.delete(sid)
        except Exception as exc:  # reported through store.health(); the loop goes on
            log.warning("store maintenance failed: %s", exc)

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

    async def drain(self) -> None:
        """Graceful stop: refuse new work, let turns finish, close clients with 1001."""
        log.info("draining: %d connections, %d sessions", len(self.router.connections), len(self.registry))
        self.router.draining = True
        self.turns.draining = True
        for session in self.registry.sessions.values():  # what waits would only be cancelled
            self.turns.drop_queue(session, ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.graceful_timeout
        while any(s.turn is not None for s in self.registry.sessions.values()) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in self.registry.sessions.values():
            self.turns.cancel(session, ErrorCode.SHUTTING_DOWN)
        await asyncio.sleep(0.1 if any(s.turn for s in self.registry.sessions.values()) else 0)
        for conn in list(self.router.connections.values()):
            await conn.drain(0.5)
        if self._ws_server is not None:
            self._ws_server.close(close_connections=True)
            try:
                await asyncio.wait_for(self._ws_server.wait_closed(), 5.0)
            except TimeoutError:
                log.warning("some connections did not close in time")
