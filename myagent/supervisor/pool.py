"""The sandbox pool: spawn, place sessions, replace the dead, stop.

The pool owns processes; it knows nothing about WebSockets. The server gives
it two callbacks: ``on_frame(sandbox, frame)`` for everything a sandbox says and
``on_lost(sandbox, reason)`` when one is gone (the server restores its
sessions). Replacement is bounded by a RestartPolicy.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from myagent.sandbox import ops
from myagent.sandbox.pipe import FramePipe, open_pipe
from myagent.supervisor.exceptions import SandboxNotReady, SandboxStartError
from myagent.supervisor.restart import RestartPolicy
from myagent.supervisor.zygote import Zygote

log = logging.getLogger("myagent.supervisor.pool")

STARTING, READY, DRAINING, DEAD = "starting", "ready", "draining", "dead"
RETIRED = "RETIRED"  # kill_reason of a sandbox we stopped on purpose (recycling, reload)


@dataclass(eq=False)
class Sandbox:
    """Front-process view of one sandbox process."""

    id: int
    pid: int
    pipe: FramePipe | None = None
    state: str = STARTING
    sessions: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    last_beat: float = field(default_factory=time.monotonic)
    turns: int = 0
    kill_reason: str | None = None  # set before we kill it, so the loss is reported right
    kill_step: str | None = None    # "SIGTERM" or "SIGKILL": which rung of the ladder fired
    ready: asyncio.Future | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    zygote: Zygote | None = None
    rss: int = 0           # last watchdog sample, bytes (the sandbox and its children)
    cpu: float = 0.0       # last watchdog sample, percent of one core (the sandbox and its children)
    children_rss: int = 0
    children_cpu: float = 0.0
    procs: int = 0         # last watchdog count: the sandbox and every descendant (zombies included)
    tasks: int = 0         # the same, threads included (what --sandbox-max-procs caps)
    containment: str = ""  # "pid-namespace" or "subreaper", as the watchdog found it
    turn_limit: int = 0    # recycle after this many turns (0 = never)

    def send(self, frame: dict) -> None:
        if self.pipe is not None:
            self.pipe.send(frame)

    @property
    def load(self) -> int:
        return len(self.sessions)


class SandboxPool:
    def __init__(self, config: Any, workers: int, env: dict[str, str],
                 on_frame: Callable[[Sandbox, dict], None],
                 on_lost: Callable[[Sandbox, str], None],
                 policy: RestartPolicy | None = None) -> None:
        self.config = config
        self.size = workers
        self.env = env
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.policy = policy or RestartPolicy(config.max_restarts, config.restart_window)
        self.sandboxes: dict[int, Sandbox] = {}
        self.by_pid: dict[int, Sandbox] = {}
        self.zygote: Zygote | None = None
        self.agent: dict[str, Any] = {}
        self.stopping = False
        self.unavailable_reason: str | None = None
        self.restarts_by_reason: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._respawns: set[asyncio.Task] = set()
        self.workdir_root = config.sandbox_dir or ""
        self.on_ready: Callable[[Sandbox], None] = lambda sandbox: None
        self.old_zygotes: list[Zygote] = []
        self._zygote_lock = asyncio.Lock()

    @property
    def sandbox_config(self) -> dict:
        c = self.config
        return {"heartbeat": c.worker_heartbeat, "confirm_timeout": c.confirm_timeout,
                "max_history": c.max_history_messages,
                "max_memory": c.max_memory, "max_files": c.sandbox_max_files,
                "max_file_size": c.sandbox_max_file_size, "max_procs": c.sandbox_max_procs,
                "user": c.sandbox_user,
                "workdir_root": self.workdir_root}

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
        self.zygote = Zygote(self.config.agent_file, self.sandbox_config, self.env, None, self._on_exit)
        self.agent = await self.zygote.start(self.config.worker_start_timeout)
        results = await asyncio.gather(*(self.spawn() for _ in range(self.size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(results):
            raise SandboxStartError(f"no sandbox started: {errors[0]}")
        return self.agent

    async def spawn(self) -> Sandbox:
        assert self.zygote is not None
        if not self.zygote.alive:
            async with self._zygote_lock:  # N sandboxes died with it: restart it once
                if not self.zygote.alive:
                    await self._restart_zygote()
        timeout = self.config.worker_start_timeout
        zygote = self.zygote
        pid, sock = await zygote.fork(timeout)
        sandbox = Sandbox(id=next(self._ids), pid=pid, zygote=zygote, turn_limit=self._turn_limit())
        sandbox.ready = asyncio.get_running_loop().create_future()
        self.sandboxes[sandbox.id] = sandbox
        self.by_pid[pid] = sandbox
        sandbox.pipe = await open_pipe(sock, lambda frame: self._frame(sandbox, frame),
                                       lambda exc: self._lost(sandbox))
        try:
            await asyncio.wait_for(sandbox.ready, timeout)
        except TimeoutError:
            self.kill(sandbox, "WORKER_TIMEOUT")
            # Its loss is reported through _lost, which schedules the replacement.
            raise SandboxNotReady(f"sandbox {pid} did not become ready within {timeout:g}s") from None
        log.info("sandbox %s ready (pid %s)", sandbox.id, pid,
                 extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})
        self.on_ready(sandbox)
        return sandbox

    def _turn_limit(self) -> int:
        c = self.config
        if c.max_turns_per_worker <= 0:
            return 0
        import random

        return c.max_turns_per_worker + random.randint(0, max(0, c.max_turns_jitter))

    async def _restart_zygote(self) -> None:
        log.warning("the zygote is gone; starting a new one")
        old = self.zygote
        if old is not None:
            await old.stop(0.5)
        self.zygote = Zygote(self.config.agent_file, self.sandbox_config, self.env, None, self._on_exit)
        self.agent = await self.zygote.start(self.config.worker_start_timeout)

    # Frames and loss -----------------------------------------------------------
    def _frame(self, sandbox: Sandbox, frame: dict) -> None:
        op = frame.get("op")
        if op == ops.HEARTBEAT:
            sandbox.last_beat = time.monotonic()
            return
        if op == ops.READY:
            sandbox.state = READY
            sandbox.last_beat = time.monotonic()
            if sandbox.ready is not None and not sandbox.ready.done():
                sandbox.ready.set_result(None)
            return
        self.on_frame(sandbox, frame)

    def _lost(self, sandbox: Sandbox) -> None:
        if sandbox.state == DEAD:
            return
        # A draining sandbox (recycled, or of an older version) already has its replacement.
        replaced = sandbox.state == DRAINING
        sandbox.state = DEAD
        self.sandboxes.pop(sandbox.id, None)
        if sandbox.ready is not None and not sandbox.ready.done():
            sandbox.ready.set_exception(SandboxNotReady(f"sandbox {sandbox.pid} exited during start"))
        reason = sandbox.kill_reason or "SANDBOX_CRASHED"
        self._release_zygote(sandbox.zygote)
        if reason == RETIRED:
            log.info("sandbox %s (pid %s) retired", sandbox.id, sandbox.pid,
                     extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})
            self._signal(sandbox, signal.SIGKILL)
            return
        if not self.stopping:
            log.warning("sandbox %s (pid %s) lost: %s%s", sandbox.id, sandbox.pid, reason,
                        f" after {sandbox.kill_step}" if sandbox.kill_step else "",
                        extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})
            self.restarts_by_reason[reason] = self.restarts_by_reason.get(reason, 0) + 1
        # Make sure the process is gone (a closed pipe may still have a live process).
        self._signal(sandbox, signal.SIGKILL)
        self.on_lost(sandbox, reason)
        if not self.stopping and not replaced:
            self._schedule_respawn(reason)

    def _on_exit(self, pid: int, code: int | None, sig: int | None) -> None:
        sandbox = self.by_pid.pop(pid, None)
        if sandbox is not None:
            sandbox.exit_code, sandbox.exit_signal = code, sig
            if not self.stopping and (sig or code):
                log.info("sandbox %s (pid %s) exited: %s", sandbox.id, pid,
                         f"signal {sig}" if sig else f"code {code}",
                         extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})

    def _schedule_respawn(self, reason: str) -> None:
        delay = self.policy.next_delay()
        if delay is None:
            self.unavailable_reason = (f"restart budget exhausted: {self.policy.max_restarts} restarts "
                                       f"in {self.policy.window:g}s (last: {reason})")
            log.error("agent unavailable: %s", self.unavailable_reason)
            return
        task = asyncio.get_running_loop().create_task(self._respawn_after(delay))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
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
        """Take no new sessions on ``sandbox``; the caller moves its sessions away, then ``stop_retired``."""
        if sandbox.state != READY:
            return
        sandbox.state = DRAINING
        log.info("sandbox %s (pid %s) draining after %d turns", sandbox.id, sandbox.pid, sandbox.turns,
                 extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})
        self._spawn_in_background()

    def stop_retired(self, sandbox: Sandbox) -> None:
        if sandbox.state == DRAINING and not sandbox.sessions and sandbox.kill_reason is None:
            sandbox.kill_reason = RETIRED
            sandbox.send({"op": ops.STOP})
            asyncio.get_running_loop().call_later(self.config.kill_grace + 1.0, self._escalate, sandbox)

    def _spawn_in_background(self) -> None:
        task = asyncio.get_running_loop().create_task(self._respawn_after(0))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def reload(self) -> dict[str, Any]:
        """Load the agent file afresh in a new zygote; raise AgentFileError and keep serving if it fails."""
        zygote = Zygote(self.config.agent_file, self.sandbox_config, self.env, None, self._on_exit)
        try:
            agent = await zygote.start(self.config.worker_start_timeout)
        except BaseException:
            await zygote.stop(0.5)
            raise
        old, self.zygote, self.agent = self.zygote, zygote, agent
        if old is not None:
            self.old_zygotes.append(old)
        for sandbox in list(self.sandboxes.values()):
            if sandbox.zygote is not zygote and sandbox.state == READY:
                sandbox.state = DRAINING
        await asyncio.gather(*(self.spawn() for _ in range(self.size)), return_exceptions=True)
        for zyg in list(self.old_zygotes):
            self._release_zygote(zyg)
        if self.unavailable_reason and self.ready_count:
            # The restart budget was spent by the previous version; the new one starts afresh.
            log.info("the reloaded agent serves again: restart budget reset")
            self.policy.reset()
            self.unavailable_reason = None
        return agent

    def _release_zygote(self, zygote: Zygote | None) -> None:
        """Stop an old zygote once none of its sandboxes is left (they die with it)."""
        if zygote is None or zygote is self.zygote or zygote not in self.old_zygotes:
            return
        if any(s.zygote is zygote for s in self.sandboxes.values()):
            return
        self.old_zygotes.remove(zygote)
        asyncio.get_running_loop().create_task(zygote.stop(1.0))

    # Placement ---------------------------------------------------------------
    def place(self) -> Sandbox | None:
        """The least-loaded ready sandbox with room, or None."""
        best = None
        limit = self.config.sessions_per_worker
        for sandbox in self.sandboxes.values():
            if sandbox.state == READY and sandbox.load < limit and (best is None or sandbox.load < best.load):
                best = sandbox
        return best

    @property
    def ready_count(self) -> int:
        return sum(1 for s in self.sandboxes.values() if s.state == READY)

    # Killing -----------------------------------------------------------------
    def _signal(self, sandbox: Sandbox, sig: int) -> bool:
        try:
            os.killpg(sandbox.pid, sig)  # the sandbox leads its own group: tool children die too
            return True
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(sandbox.pid, sig)
                return True
            except (ProcessLookupError, PermissionError):
                return False

    def kill(self, sandbox: Sandbox, reason: str, grace: float | None = None) -> None:
        """Escalation ladder with one budget: SIGTERM now, SIGKILL after ``grace``."""
        if sandbox.state == DEAD or sandbox.kill_reason is not None:
            return
        sandbox.kill_reason = reason
        sandbox.kill_step = "SIGTERM"
        self._signal(sandbox, signal.SIGTERM)
        grace = self.config.kill_grace if grace is None else grace
        if grace <= 0:
            self._escalate(sandbox)
        else:
            asyncio.get_running_loop().call_later(grace, self._escalate, sandbox)

    def _escalate(self, sandbox: Sandbox) -> None:
        if sandbox.state != DEAD or self._alive(sandbox.pid):
            sandbox.kill_step = "SIGKILL"
            self._signal(sandbox, signal.SIGKILL)
            if sandbox.pipe is not None:
                sandbox.pipe.abort()

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    # Stop --------------------------------------------------------------------
    async def stop(self, timeout: float = 2.0) -> None:
        """Ask every sandbox to stop, SIGKILL what is left after ``timeout``, stop the zygote."""
        self.stopping = True
        for task in list(self._respawns):
            task.cancel()
        sandboxes = list(self.sandboxes.values())
        for sandbox in sandboxes:
            sandbox.send({"op": ops.STOP})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(s.state != DEAD for s in sandboxes) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for sandbox in sandboxes:
            if sandbox.state != DEAD:
                self._escalate(sandbox)
        for zygote in [self.zygote, *self.old_zygotes]:
            if zygote is not None:
                await zygote.stop(1.0)
        if self.workdir_root and not self.config.sandbox_dir:
            import shutil

            shutil.rmtree(self.workdir_root, ignore_errors=True)
