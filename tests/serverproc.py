"""Start a real `myagent-ws server` process for a test, and clean up after it.

The server listens on an ephemeral port on 127.0.0.1 (``--port 0``); the port
is read from its "listening on" line. ``stop()`` ends it and then SIGKILLs any
process of its tree still alive (by pid, collected while it ran).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
AGENTS = Path(__file__).resolve().parent / "fixtures" / "agents"
SCRIPTS = Path(__file__).resolve().parent / "fixtures" / "scripts"
_LISTEN_RE = re.compile(r"listening on (wss?)://[^:]+:(\d+)")


class ServerProcess:
    def __init__(self, agent_file: str | Path, *args: str, env: dict[str, str] | None = None,
                 llm: str | None = None) -> None:
        self.agent_file = str(agent_file)
        self.args = list(args)
        # Tests get a throwaway store unless they pass --store (CLI options beat the environment).
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "MYAGENT_WS_STORE": "memory:", **(env or {})}
        # With auth on, /status and /metrics need a token: get() presents the first one. Tokens come
        # from the environment (the server refuses them on the command line, where `ps` shows them).
        tokens = [t.strip() for t in self.env.get("MYAGENT_WS_AUTH_TOKENS", "").split(",") if t.strip()]
        self.token = tokens[0] if tokens else None
        if llm is not None:
            self.env["MYAGENT_LLM"] = llm
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.scheme = "ws"
        self.output: list[str] = []
        self._pids: set[int] = set()
        self._reader: threading.Thread | None = None
        self._listening = threading.Event()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"{'https' if self.scheme == 'wss' else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, wait_ready: bool = True) -> "ServerProcess":
        cmd = [sys.executable, "-m", "myagent.cli", "server", self.agent_file, "--host", "127.0.0.1",
               "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.text}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not listen within {timeout}s:\n{self.text}")
        if wait_ready:
            while self.get("/ready")[0] != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready within {timeout}s:\n{self.text}")
                time.sleep(0.05)
        self.track_children()
        return self

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))
            match = _LISTEN_RE.search(line)
            if match and not self._listening.is_set():
                self.scheme, self.port = match.group(1), int(match.group(2))
                self._listening.set()

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    def track_children(self) -> set[int]:
        """Remember every descendant pid (so stop() can make sure none survives)."""
        if self.proc is None:
            return self._pids
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
        return self._pids

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, dict | str]:
        context = None
        if self.scheme == "wss":  # tests use self-signed certificates
            import ssl

            context = ssl._create_unverified_context()
        request = urllib.request.Request(self.http + path)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                body = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), exc.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def status(self) -> dict:
        code, body = self.get("/status")
        assert code == 200, body
        return body  # type: ignore[return-value]

    def sandbox_pids(self) -> list[int]:
        return [s["pid"] for s in self.status()["sandboxes"]]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.track_children()
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        self.track_children()
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(5)
        kill_pids(self._pids)
        if self._reader is not None:
            self._reader.join(2)
        return code

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kill_pids(pids: set[int] | list[int]) -> None:
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.kill()
            proc.wait(2)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass


def alive(pids: set[int] | list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out
