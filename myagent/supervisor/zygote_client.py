"""The front process's client of the zygote: start it, ask it to fork sandboxes.

(The zygote process itself is :mod:`myagent.sandbox.zygote`.)

The control channel is a SOCK_SEQPACKET socketpair, so every message keeps its
boundaries and a fork request carries the new sandbox's socket as SCM_RIGHTS.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
from typing import Any, Callable

import orjson

from myagent.declared_env import unreadable
from myagent.supervisor.exceptions import AgentFileError, SandboxStartError
from myagent.wire import ops

log = logging.getLogger("myagent.supervisor.zygote")


class ZygoteClient:
    """A preloaded process that forks sandboxes; one per agent file version."""

    def __init__(self, agent_file: str, sandbox_config: dict, env: dict[str, str], cwd: str | None,
                 on_exit: Callable[[int, int | None, int | None], None], declared: tuple[str, ...] = ()) -> None:
        self.agent_file = agent_file
        self.sandbox_config = sandbox_config
        self.env = env
        self.declared = declared  # what the front read from the agent file (and put in env)
        self.cwd = cwd
        self.on_exit = on_exit
        self.agent: dict[str, Any] = {}
        self.llm = ""  # how the sandboxes' environment picks the LLM, described by the zygote
        self.process: subprocess.Popen | None = None
        self._ctrl: socket.socket | None = None
        self._loaded: asyncio.Future | None = None
        self._forks: dict[int, asyncio.Future] = {}
        self._req = itertools.count(1)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self, timeout: float) -> dict[str, Any]:
        """Start the zygote and wait until the agent file is loaded; return its description."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "myagent.sandbox.zygote", "--ctrl-fd", str(theirs.fileno()),
             "--agent-file", self.agent_file, "--config", orjson.dumps(self.sandbox_config).decode()],
            pass_fds=(theirs.fileno(),), env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches the front process only
        )
        theirs.close()
        ours.setblocking(False)
        self._ctrl = ours
        self._loaded = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            return await asyncio.wait_for(self._loaded, timeout)
        except TimeoutError:
            self.kill()
            raise SandboxStartError(f"{self.agent_file}: loading the agent file took longer than {timeout:g}s") from None
        except AgentFileError:
            if self.agent:  # loaded, then refused (a declaration the front could not read): fork nothing
                self._close_ctrl()
                self.kill()
            raise

    def _on_readable(self) -> None:
        assert self._ctrl is not None
        while True:
            try:
                data = self._ctrl.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._on_eof()
                return
            self._on_message(orjson.loads(data))

    def _on_message(self, msg: dict) -> None:
        op = msg.get("op")
        if op == ops.LOADED:
            self.agent = msg["agent"]
            self.llm = msg.get("llm", "")
            # A name declared where the front's read of the file did not find it has no value here.
            hidden = unreadable(msg.get("env", ()), self.declared)
            if self._loaded and not self._loaded.done():
                if hidden:
                    self._loaded.set_exception(AgentFileError(f"{self.agent_file} {hidden}"))
                else:
                    self._loaded.set_result(msg["agent"])
        elif op == ops.LOAD_ERROR:
            if self._loaded and not self._loaded.done():
                self._loaded.set_exception(AgentFileError(msg.get("reason", "unknown error")))
        elif op == ops.FORKED:
            future = self._forks.pop(msg.get("req"), None)
            if future is not None and not future.done():
                future.set_result(msg["pid"])
        elif op == ops.EXITED:
            self.on_exit(msg["pid"], msg.get("code"), msg.get("signal"))

    def _on_eof(self) -> None:
        self._close_ctrl()
        code = self.process.poll() if self.process else None
        error = SandboxStartError(f"the zygote exited (code {code})")
        if self._loaded and not self._loaded.done():
            self._loaded.set_exception(AgentFileError(f"{self.agent_file}: the loader process exited "
                                                      f"(code {code}) before loading the agent"))
        for future in self._forks.values():
            if not future.done():
                future.set_exception(error)
        self._forks.clear()

    async def fork(self, timeout: float) -> tuple[int, socket.socket]:
        """Fork a sandbox; return its pid and the front's end of its socket."""
        if self._ctrl is None:
            raise SandboxStartError("the zygote is not running")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        req = next(self._req)
        future = asyncio.get_running_loop().create_future()
        self._forks[req] = future
        try:
            socket.send_fds(self._ctrl, [orjson.dumps({"op": ops.FORK, "req": req})], [theirs.fileno()])
        except OSError as exc:
            self._forks.pop(req, None)
            ours.close()
            raise SandboxStartError(f"fork request failed: {exc}") from None
        finally:
            theirs.close()
        try:
            pid = await asyncio.wait_for(future, timeout)
        except BaseException:
            self._forks.pop(req, None)
            ours.close()
            raise
        return pid, ours

    @property
    def alive(self) -> bool:
        return self._ctrl is not None and self.process is not None and self.process.poll() is None

    def _close_ctrl(self) -> None:
        if self._ctrl is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._ctrl.fileno())
            except (RuntimeError, ValueError):
                pass
            self._ctrl.close()
            self._ctrl = None

    async def stop(self, timeout: float = 2.0) -> None:
        """Close the control channel; the zygote exits on EOF (SIGKILL after timeout)."""
        self._close_ctrl()
        if self.process is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while self.process.poll() is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except ProcessLookupError:
                pass
            self.process.wait()


class Zygotes:
    """The zygote of the agent file as last loaded, and older ones whose sandboxes still run.

    A reload starts a new zygote beside the current one; an old one stops once
    none of its sandboxes is left (they die with it). A dead current zygote is
    restarted once, however many sandboxes died with it.
    """

    def __init__(self, make: Callable[[], ZygoteClient], start_timeout: float) -> None:
        self.make = make
        self.start_timeout = start_timeout
        self.current: ZygoteClient | None = None
        self.old: list[ZygoteClient] = []
        self._lock = asyncio.Lock()

    async def start(self) -> dict[str, Any]:
        """Start the first zygote; the agent's description. Raises AgentFileError."""
        self.current = self.make()
        return await self.current.start(self.start_timeout)

    async def alive(self) -> tuple[ZygoteClient, dict[str, Any] | None]:
        """The current zygote, restarted first if it died (then with the agent's description)."""
        assert self.current is not None
        agent = None
        async with self._lock:
            if not self.current.alive:
                log.warning("the zygote is gone; starting a new one")
                await self.current.stop(0.5)
                self.current = self.make()
                agent = await self.current.start(self.start_timeout)
        return self.current, agent

    async def replace(self) -> dict[str, Any]:
        """Load the agent file afresh in a new zygote that becomes the current one; the previous one
        serves its sandboxes until :meth:`release`. Raises AgentFileError and changes nothing."""
        zygote = self.make()
        try:
            agent = await zygote.start(self.start_timeout)
        except BaseException:
            await zygote.stop(0.5)
            raise
        if self.current is not None:
            self.old.append(self.current)
        self.current = zygote
        return agent

    def release(self, in_use: Callable[[ZygoteClient], bool]) -> None:
        """Stop every old zygote none of whose sandboxes is left."""
        for zygote in list(self.old):
            if not in_use(zygote):
                self.old.remove(zygote)
                asyncio.get_running_loop().create_task(zygote.stop(1.0))

    async def stop(self) -> None:
        for zygote in [self.current, *self.old]:
            if zygote is not None:
                await zygote.stop(1.0)

    def kill(self) -> None:
        for zygote in [self.current, *self.old]:
            if zygote is not None:
                zygote.kill()
