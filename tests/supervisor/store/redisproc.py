"""A throwaway ``redis-server`` on a free loopback port, for tests and the store benchmark.

Started as our own child process with no persistence (``--save '' --appendonly no``)
in a temporary directory, stopped by pid. ``available()`` says whether the Debian
package is installed (``apt-get install redis-server``); callers skip without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

REDIS_SERVER = shutil.which("redis-server", path=os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin")
MISSING = "redis-server is not installed (apt-get install -y redis-server)"


def available() -> bool:
    return REDIS_SERVER is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="myagent-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        assert REDIS_SERVER is not None, MISSING
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} (port {self.port} taken?)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")
            time.sleep(0.02)
        return self

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """Send one command (inline protocol) and return the raw reply: no client library needed."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            parts = [f"${len(a.encode())}\r\n{a}\r\n" for a in args]
            sock.sendall(f"*{len(args)}\r\n{''.join(parts)}".encode())
            return sock.recv(65536)

    def ping(self) -> bool:
        try:
            return self.command("PING", timeout=0.5).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (SIGKILL: abrupt, like a crashed Redis) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> "RedisServer":
        """Stop and start again on the same port (empty: nothing is persisted)."""
        self.stop()
        return self.start()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
