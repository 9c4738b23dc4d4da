"""The sandbox pool: spawn, replace the dead, retire, terminate, stop.

The pool owns processes and knows nothing about sessions or WebSockets:
which sandbox hosts which session is :class:`~myagent.supervisor.placement.Placement`'s
business. The server connects four callbacks: ``on_ready(sandbox)``,
``on_lost(sandbox, reason)`` (the pool has already made sure the process is
gone), ``on_control(sandbox, frame)`` for a sandbox's control ops and
``on_data(sandbox, body)`` for its event and message frames. Replacement is
bounded by a RestartPolicy; every kill climbs one ladder (:func:`sandboxes.terminate`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import signal
import time
from collections import deque
from typing import Any, Callable

import orjson

from myagent.supervisor.background import Background
from myagent.supervisor.environment import SandboxEnv
from myagent.supervisor.exceptions import AgentFileError, SandboxNotReady, SandboxStartError
from myagent.supervisor.restart import RestartPolicy
from myagent.supervisor.sandboxes import (DEAD, DRAINING, READY, RETIRED, SHUTDOWN, STARTING, Sandbox, signal_tree,
                                          terminate)
from myagent.supervisor.zygote_client import ZygoteClient, Zygotes
from myagent.wire import ops
from myagent.wire.pipe import open_pipe

log = logging.getLogger("myagent.supervisor.pool")

RECENT_LOSSES = 20
EXTRA_IDLE = 5.0  # seconds a sandbox beyond --workers stays empty before it is stopped

class SandboxPool:
    def __init__(self, config: Any, workers: int, env: dict[str, str] | Callable[[], SandboxEnv],
                 policy: RestartPolicy | None = None) -> None:
        self.config = config
        self.size = workers
        self.max_size = max(workers, config.max_sandboxes)  # on-demand growth up to --max-sandboxes
        # Prepared again for every zygote: a reload may declare other names (and fail for a missing one).
        self._prepare_env = env if callable(env) else (lambda: SandboxEnv(dict(env)))
        self.policy = policy or RestartPolicy(config.max_restarts, config.restart_window)
        self.on_ready: Callable[[Sandbox], None] = lambda sandbox: None
        # Returns True when the loss is blamed on sessions (not charged to the restart budget).
        self.on_lost: Callable[[Sandbox, str], bool] = lambda sandbox, reason: False
        self.on_control: Callable[[Sandbox, dict], None] = lambda sandbox, frame: None
        self.on_data: Callable[[Sandbox, bytes], None] = lambda sandbox, body: None
        self.sandboxes: dict[int, Sandbox] = {}
        self.by_pid: dict[int, Sandbox] = {}
        self.zygotes = Zygotes(self._new_zygote, config.worker_start_timeout)
        self.agent: dict[str, Any] = {}
        self.stopping = False
        self.unavailable_reason: str | None = None
        self.restarts_by_reason: dict[str, int] = {}
        self.losses: deque[Sandbox] = deque(maxlen=RECENT_LOSSES)
        self.workdir_root = config.sandbox_dir or ""
        self._ids = itertools.count(1)
        self._respawns = Background()
        self.respawning = 0  # sandboxes on their way (backoff, zygote restart, fork): capacity already
        self._grow_lock = asyncio.Lock()

    @property
    def sandbox_config(self) -> dict:
        c = self.config
        return {"heartbeat": c.worker_heartbeat, "confirm_timeout": c.confirm_timeout,
                "max_history": c.max_history_messages, "max_tool_result_chars": c.max_tool_result_chars,
                "max_memory": c.max_memory, "max_files": c.sandbox_max_files,
                "max_file_size": c.sandbox_max_file_size, "max_procs": c.sandbox_max_procs,
                "user": c.sandbox_user,
                "workdir_root": self.workdir_root,
                # the sandboxes' own log lines, in the front's format (JSON lines carry trace ids)
                "log_level": "debug" if getattr(c, "debug", False) else getattr(c, "log_level", "info"),
                "log_format": getattr(c, "log_format", "text")}

    def _new_zygote(self) -> ZygoteClient:
        prepared = self._prepare_env()  # raises AgentFileError: a declared variable is not set
        return ZygoteClient(self.config.agent_file, self.sandbox_config, prepared.env, None, self._on_exit,
                            declared=prepared.declared)

    @property
    def env(self) -> dict[str, str]:
        """The environment of the current zygote and its sandboxes (its names are in /status)."""
        return self.zygotes.current.env if self.zygotes.current is not None else {}

    @property
    def declared(self) -> tuple[str, ...]:
        """The names the agent file served by the current zygote declares."""
        return self.zygotes.current.declared if self.zygotes.current is not None else ()

    # Start ------------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Load the agent file in the zygote (raises AgentFileError), then fill the pool."""
        if not self.workdir_root:
            import tempfile

            self.workdir_root = tempfile.mkdtemp(prefix="myagent-ws-")
            os.chmod(self.workdir_root, 0o711)
        if self.config.sandbox_user and os.getuid() == 0:
            # The zygote runs as --sandbox-user and creates each sandbox's directory in here.
            import pwd

            entry = pwd.getpwnam(self.config.sandbox_user)
            os.chown(self.workdir_root, entry.pw_uid, entry.pw_gid)
        self.agent = await self.zygotes.start()
        results = await asyncio.gather(*(self.spawn() for _ in range(self.size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(results):
            raise SandboxStartError(f"no sandbox started: {errors[0]}")
        return self.agent

    async def spawn(self) -> Sandbox:
        timeout = self.config.worker_start_timeout
        self.respawning += 1
        try:
            zygote, reloaded = await self.zygotes.alive()  # N sandboxes died with it: restarted once
            self.agent = reloaded or self.agent
            pid, sock = await zygote.fork(timeout)
        finally:
            self.respawning -= 1
        sandbox = Sandbox(id=next(self._ids), pid=pid, zygote=zygote, turn_limit=self._turn_limit())
        sandbox.ready = asyncio.get_running_loop().create_future()
        self.sandboxes[sandbox.id] = sandbox
        self.by_pid[pid] = sandbox
        sandbox.pipe = await open_pipe(sock, lambda body: self._frame(sandbox, body),
                                       lambda exc: self._lost(sandbox))
        try:
            await asyncio.wait_for(sandbox.ready, timeout)
        except TimeoutError:
            self.terminate(sandbox, "WORKER_TIMEOUT")
            # Its loss is reported through _lost, which schedules the replacement.
            raise SandboxNotReady(f"sandbox {pid} did not become ready within {timeout:g}s") from None
        log.info("sandbox %s ready (pid %s)", sandbox.id, pid, extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})
        self.on_ready(sandbox)
        return sandbox

    def _turn_limit(self) -> int:
        c = self.config
        if c.max_turns_per_worker <= 0:
            return 0
        return c.max_turns_per_worker + random.randint(0, max(0, c.max_turns_jitter))

    # Frames and loss -----------------------------------------------------------
    def _frame(self, sandbox: Sandbox, body: bytes) -> None:
        if body[:1] != b"{":
            self.on_data(sandbox, body)
            return
        try:
            frame = orjson.loads(body)
            op = frame.get("op")
        except (orjson.JSONDecodeError, AttributeError):
            frame, op = {"op": None}, None
        if op == ops.HEARTBEAT:
            sandbox.last_beat = time.monotonic()
        elif op == ops.READY:
            sandbox.state = READY if sandbox.state == STARTING else sandbox.state
            sandbox.last_beat = time.monotonic()
            if sandbox.ready is not None and not sandbox.ready.done():
                sandbox.ready.set_result(None)
        else:
            self.on_control(sandbox, frame)

    def _lost(self, sandbox: Sandbox) -> None:
        if sandbox.state == DEAD:
            return
        # A draining sandbox (recycled, or of an older version) already has its replacement.
        replaced = sandbox.state == DRAINING
        sandbox.state = DEAD
        sandbox.lost_at = time.monotonic()
        self.sandboxes.pop(sandbox.id, None)
        if sandbox.ready is not None and not sandbox.ready.done():
            sandbox.ready.set_exception(SandboxNotReady(f"sandbox {sandbox.pid} exited during start"))
        reason = sandbox.kill_reason or "SANDBOX_CRASHED"
        signal_tree(sandbox, signal.SIGKILL)  # a closed pipe may still have a live process
        self._release_zygotes()
        if reason in (RETIRED, SHUTDOWN):
            log.info("sandbox %s (pid %s) stopped (%s)", sandbox.id, sandbox.pid, reason.lower(),
                     extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})
        else:
            log.warning("sandbox %s (pid %s) lost: %s%s", sandbox.id, sandbox.pid, reason,
                        f" after {sandbox.kill_rung}" if sandbox.kill_rung else "",
                        extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})
            self.restarts_by_reason[reason] = self.restarts_by_reason.get(reason, 0) + 1
            self.losses.append(sandbox)
        blamed = self.on_lost(sandbox, reason)
        if reason != RETIRED and not self.stopping and not replaced:
            self._schedule_respawn(reason, charge=not blamed)

    def _on_exit(self, pid: int, code: int | None, sig: int | None) -> None:
        sandbox = self.by_pid.pop(pid, None)
        if sandbox is None:
            return
        sandbox.exit_code, sandbox.exit_signal, sandbox.exited = code, sig, True
        if sandbox.pipe is not None:
            sandbox.pipe.abort()  # gone is gone, even if a descendant still holds its socket open
        if not self.stopping and (sig or code):
            log.info("sandbox %s (pid %s) %s", sandbox.id, pid, sandbox.exit_text,
                     extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})

    def _schedule_respawn(self, reason: str, charge: bool = True) -> None:
        delay = self.policy.next_delay(charge)
        if delay is None:
            self.unavailable_reason = (f"restart budget exhausted: {self.policy.max_restarts} restarts "
                                       f"in {self.policy.window:g}s (last: {reason})")
            log.error("agent unavailable: %s", self.unavailable_reason)
            return
        self._respawn_later(delay)

    def _respawn_later(self, delay: float) -> None:
        self.respawning += 1  # counted as capacity from now on: grow() must not spawn beside it
        self._respawns.spawn(self._respawn_after(delay))

    async def _respawn_after(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self.respawning -= 1  # spawn() counts it from here on
        if self.stopping:
            return
        try:
            await self.spawn()
        except SandboxNotReady as exc:
            log.error("respawn failed: %s", exc)
        except Exception as exc:
            log.error("respawn failed: %s", exc)
            self._schedule_respawn("SANDBOX_CRASHED")

    # Recycling and reload -----------------------------------------------------
    def retire(self, sandbox: Sandbox) -> None:
        """Take no new sessions on ``sandbox`` and start its replacement; once Placement has moved
        its sessions away, :meth:`stop_if_drained` stops it."""
        if sandbox.state != READY:
            return
        sandbox.state = DRAINING
        log.info("sandbox %s (pid %s) draining after %d turns", sandbox.id, sandbox.pid, sandbox.turns,
                 extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})
        self._respawn_later(0)

    def stop_if_drained(self, sandbox: Sandbox) -> None:
        if sandbox.state == DRAINING and not sandbox.load:
            self.terminate(sandbox, RETIRED, polite=True)

    async def reload(self) -> dict[str, Any]:
        """Load the agent file afresh in a new zygote; raise AgentFileError and keep serving if it fails."""
        try:
            agent = self.agent = await self.zygotes.replace()
        except SandboxStartError as exc:  # a new zygote too slow to load (a loaded host): a failed reload too
            raise AgentFileError(str(exc)) from None
        for sandbox in list(self.sandboxes.values()):
            if sandbox.zygote is not self.zygotes.current and sandbox.state == READY:
                sandbox.state = DRAINING
        await asyncio.gather(*(self.spawn() for _ in range(self.size)), return_exceptions=True)
        self._release_zygotes()
        if self.unavailable_reason and self.ready_count:
            # The restart budget was spent by the previous version; the new one starts afresh.
            log.info("the reloaded agent serves again: restart budget reset")
            self.policy.reset()
            self.unavailable_reason = None
        return agent

    def _release_zygotes(self) -> None:
        self.zygotes.release(lambda zygote: any(s.zygote is zygote for s in self.sandboxes.values()))

    # On-demand growth (--max-sandboxes) ----------------------------------------------
    @property
    def can_grow(self) -> bool:
        return not self.stopping and not self.unavailable_reason and (
            len(self.sandboxes) + self.respawning < self.max_size)

    async def grow(self, choose: Callable[[], Sandbox | None]) -> Sandbox | None:
        """A sandbox with room: ``choose()``'s, or one more spawned while --max-sandboxes allows it."""
        async with self._grow_lock:  # concurrent callers: one spawn at a time, then choose again
            found = choose()
            if found is not None or not self.can_grow:
                return found
            try:
                return await self.spawn()
            except (SandboxNotReady, SandboxStartError) as exc:
                log.warning("could not grow the pool: %s", exc)
                return None

    def shrink(self, now: float) -> None:
        """Stop sandboxes beyond --workers once they have been empty for EXTRA_IDLE seconds."""
        ready = sorted((s for s in self.sandboxes.values() if s.state == READY), key=lambda s: -s.id)
        extra = len(ready) - self.size
        for sandbox in ready:
            if sandbox.load:
                sandbox.empty_since = None
            elif extra > 0:
                if sandbox.empty_since is None:
                    sandbox.empty_since = now
                elif now - sandbox.empty_since > EXTRA_IDLE:
                    sandbox.state = DRAINING
                    self.terminate(sandbox, RETIRED, polite=True)
                    extra -= 1

    @property
    def ready_count(self) -> int:
        return sum(1 for s in self.sandboxes.values() if s.state == READY)

    # Killing ---------------------------------------------------------------------
    def terminate(self, sandbox: Sandbox, reason: str, *, polite: bool = False, grace: float | None = None) -> None:
        """Stop ``sandbox`` for ``reason`` (see :func:`sandboxes.terminate`); ``grace`` defaults to --kill-grace."""
        terminate(sandbox, reason, self.config.kill_grace if grace is None else grace, polite=polite)

    # Stop --------------------------------------------------------------------
    async def stop(self) -> None:
        """Climb the ladder for every sandbox (a rung every --kill-grace), then stop the zygotes."""
        self.stopping = True
        self._respawns.cancel()
        sandboxes = list(self.sandboxes.values())
        for sandbox in sandboxes:
            self.terminate(sandbox, SHUTDOWN, polite=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3 * self.config.kill_grace  # the three rungs
        while any(s.state != DEAD for s in sandboxes) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await self.zygotes.stop()
        if self.workdir_root and not self.config.sandbox_dir:
            import shutil

            shutil.rmtree(self.workdir_root, ignore_errors=True)

    def kill_now(self) -> None:
        """The top rung for everything at once (a second signal: exit now)."""
        for sandbox in list(self.sandboxes.values()):
            signal_tree(sandbox, signal.SIGKILL)
        self.zygotes.kill()
