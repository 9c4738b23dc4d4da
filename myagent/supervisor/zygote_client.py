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

from myagent.supervisor.exceptions import AgentFileError, SandboxStartError
from myagent.wire import ops

log = logging.getLogger("myagent.supervisor.zygote")


class ZygoteClient:
    """A preloaded process that forks sandboxes; one per agent file version."""

    def __init__(self, agent_file: str, sandbox_config: dict, env: dict[str, str], cwd: str | None,
                 on_exit: Callable[[int, int | None, int | None], None]) -> None:
        self.agent_file = agent_file
        self.sandbox_config = sandbox_config
        self.env = env
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
            if self._loaded and not self._loaded.done():
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
