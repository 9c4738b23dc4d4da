"""What the benchmark's parts share: processes we start (and stop by pid), CPU and memory of a
process tree, the load generator runner, medians.

``MYAGENT_BENCH_TREE=/path/to/another/checkout`` runs the *servers* from that tree (its
``myagent`` package, same bench agents and scripts): how the before/after tables of
docs/benchmarks.md were measured in one run. The load generator, the fake LLM and the
reference script always come from this tree (they are the instruments).
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SERVER_TREE = Path(os.environ.get("MYAGENT_BENCH_TREE") or ROOT)
LISTEN = re.compile(r"listening on ws://[^:]+:(\d+)")
START_TIMEOUT = 60.0  # seconds a server may take to print its listening line
WARMUP = 1.0          # seconds of load before each measured window (run.py sets 0.5 for --quick)
STOP_TIMEOUT = 20.0   # seconds a server gets to stop after SIGTERM before SIGKILL


def server_env(extra: dict | None = None, drop: tuple[str, ...] = ()) -> dict:
    env = {**os.environ, **(extra or {})}
    for name in drop:
        env.pop(name, None)
    if SERVER_TREE != ROOT:
        env["PYTHONPATH"] = str(SERVER_TREE)
    return env


class Proc:
    """A server process we started; its port is read from its 'listening on' line."""

    def __init__(self, cmd: list[str], env: dict | None = None, pattern: re.Pattern = LISTEN) -> None:
        self.proc = subprocess.Popen(cmd, cwd=SERVER_TREE, env=env or dict(os.environ), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + START_TIMEOUT
        self.port = None
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        while self.port is None:
            line = self.proc.stdout.readline()
            self.lines.append(line)
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"process failed to start: {cmd}\n{''.join(self.lines[-20:])}")
            match = pattern.search(line)
            if match:
                self.port = int(match.group(1))
        self.ps = psutil.Process(self.proc.pid)
        self._pids: set[int] = set()
        self.track()
        # Drain the output so the process never blocks on a full pipe (keep the tail for errors).
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            del self.lines[:-200]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return cpu_of([self.ps])

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def track(self) -> None:
        self._pids.update(p.pid for p in self.tree())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL every process of the tree we ever saw (by pid)."""
        if hasattr(self, "ps"):
            self.track()
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in getattr(self, "_pids", ()):
            try:
                psutil.Process(pid).send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass


def _schedstat_seconds(pid: int) -> float | None:
    """CPU time of every live thread of ``pid`` in ns precision (/proc/PID/task/*/schedstat):
    psutil's cpu_times tick at 10 ms, too coarse for the CPU of one turn."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def cpu_of(procs: list[psutil.Process]) -> float:
    """Seconds of CPU the processes have used (their live threads; ns precision on Linux)."""
    total = 0.0
    for proc in procs:
        precise = _schedstat_seconds(proc.pid)
        if precise is not None:
            total += precise
            continue
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def memory_of(procs: list[psutil.Process]) -> tuple[int, int]:
    rss = uss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
            rss += info.rss
            uss += info.uss
        except psutil.NoSuchProcess:
            pass
    return rss, uss


def split_tree(server: Proc) -> dict[str, list[psutil.Process]]:
    """The server's processes by role: the front, the store writer, the sandboxes (and zygote)."""
    front = server.ps
    writer, sandboxes = [], []
    for child in front.children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        (writer if "sqlite_writer" in cmdline else sandboxes).append(child)
    return {"front": [front], "writer": writer, "sandboxes": sandboxes}


def tree_cpu(server: Proc, extra: dict[str, list[psutil.Process]] | None = None) -> dict[str, float]:
    parts = {**split_tree(server), **(extra or {})}
    return {role: cpu_of(procs) for role, procs in parts.items()}


def run_load(server: Proc, args: list[str], sample=None, timeout: float = 900) -> dict:
    """Run load.py with ``args``; ``sample()`` (default: the front's CPU) is read when the
    measured window starts and ends. Returns the load generator's JSON plus ``cpu`` (the
    sample's difference: a float or a dict of floats)."""
    sample = sample or server.cpu
    cmd = [sys.executable, str(HERE / "load.py"), *args, "--warmup", str(WARMUP)]
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert load.stdout is not None
    start = end = None
    result = None
    try:
        for line in load.stdout:
            line = line.strip()
            if line == "phase:measure":
                start = sample()
            elif line == "phase:done":
                end = sample()
            elif line.startswith("{"):
                result = json.loads(line)
        load.wait(timeout)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(5)
    if result is None or start is None or end is None:
        raise RuntimeError(f"load generator failed: {cmd}\n{''.join(server.lines[-20:])}")
    if isinstance(start, dict):
        result["cpu"] = {k: end[k] - start[k] for k in start}
    else:
        result["cpu"] = end - start
    return result


def median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
