"""The watchdog: samples every sandbox with psutil and replaces the ones over a limit.

Memory is the RSS of the sandbox process plus the processes its tools spawned (``memory_info().rss``: one read of
/proc/PID/statm; USS would need smaps, far too slow to sample every 250 ms).
CPU is percent of one core over the sample interval (children's share is
refreshed about once a second: listing them walks /proc). A limit must be crossed
on ``strikes`` consecutive samples before anything is killed, so one noisy
sample kills nothing. A sandbox whose heartbeat is older than
``--worker-timeout`` (its event loop is blocked) is replaced too. The OS
rlimits set in the sandbox itself are the hard ceiling between samples.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable

import psutil

from myagent.supervisor.pool import SandboxPool
from myagent.supervisor.sandboxes import DRAINING, READY, Sandbox

log = logging.getLogger("myagent.supervisor.watchdog")


class Strikes:
    """Counts consecutive violations of one limit (pure)."""

    def __init__(self, needed: int) -> None:
        self.needed = max(1, needed)
        self.count = 0

    def observe(self, violated: bool) -> bool:
        """Record one sample; True once the limit was violated ``needed`` times in a row."""
        self.count = self.count + 1 if violated else 0
        return self.count >= self.needed


class Watchdog:
    def __init__(self, pool: SandboxPool, config: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.config = config
        self.clock = clock
        self.interval = config.watch_interval
        self.memory_strikes = config.limit_strikes
        # CPU must stay over the cap for the whole --cpu-window.
        self.cpu_strikes = max(1, math.ceil(config.cpu_window / self.interval))
        self._procs: dict[int, psutil.Process] = {}
        self._children: dict[int, dict[int, psutil.Process]] = {}
        self._ticks = 0
        self.children_every = max(1, round(1.0 / self.interval))
        self._strikes: dict[int, tuple[Strikes, Strikes]] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sample()
            except Exception:  # the watchdog must keep watching
                log.exception("watchdog sample failed")

    def _process(self, sandbox: Sandbox) -> psutil.Process | None:
        proc = self._procs.get(sandbox.pid)
        if proc is None:
            try:
                proc = psutil.Process(sandbox.pid)
                proc.cpu_percent(None)  # prime: the first call has no interval to measure
            except psutil.NoSuchProcess:
                return None
            self._procs[sandbox.pid] = proc
        return proc

    def _sample_children(self, sandbox: Sandbox, proc: psutil.Process) -> None:
        """Processes a tool spawned count against their sandbox's caps. Listing them walks
        /proc, so it runs about once a second rather than every sample."""
        known = self._children.setdefault(sandbox.pid, {})
        rss, cpu, seen = 0, 0.0, set()
        try:
            children = proc.children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            seen.add(child.pid)
            tracked = known.setdefault(child.pid, child)
            try:
                with tracked.oneshot():
                    rss += tracked.memory_info().rss
                    cpu += tracked.cpu_percent(None)  # 0.0 on the first sample of a child
            except psutil.NoSuchProcess:
                continue
        for pid in list(known):
            if pid not in seen:
                del known[pid]
        sandbox.children_rss, sandbox.children_cpu = rss, cpu

    def sample(self) -> None:
        c = self.config
        now = self.clock()
        self._ticks += 1
        live = set()
        for sandbox in list(self.pool.sandboxes.values()):
            if sandbox.state not in (READY, DRAINING) or sandbox.kill_reason:
                continue
            live.add(sandbox.pid)
            if now - sandbox.last_beat > c.worker_timeout:
                log.warning("sandbox %s (pid %s) heartbeat is %.1fs old: WORKER_TIMEOUT", sandbox.id,
                            sandbox.pid, now - sandbox.last_beat)
                self.pool.terminate(sandbox, "WORKER_TIMEOUT")
                continue
            proc = self._process(sandbox)
            if proc is None:
                continue
            try:
                with proc.oneshot():
                    sandbox.rss = proc.memory_info().rss
                    sandbox.cpu = proc.cpu_percent(None)
            except psutil.NoSuchProcess:
                continue
            if self._ticks % self.children_every == 0:
                self._sample_children(sandbox, proc)
            sandbox.rss += sandbox.children_rss
            sandbox.cpu += sandbox.children_cpu
            mem, cpu = self._strikes.setdefault(sandbox.pid, (Strikes(self.memory_strikes),
                                                              Strikes(self.cpu_strikes)))
            if mem.observe(c.max_memory > 0 and sandbox.rss > c.max_memory):
                log.warning("sandbox %s (pid %s) RSS %d MiB over --max-memory %d MiB: MEMORY_LIMIT",
                            sandbox.id, sandbox.pid, sandbox.rss >> 20, c.max_memory >> 20)
                self.pool.terminate(sandbox, "MEMORY_LIMIT")
            elif cpu.observe(c.max_cpu > 0 and sandbox.cpu > c.max_cpu):
                log.warning("sandbox %s (pid %s) CPU %.0f%% over --max-cpu %.0f%% for %.1fs: CPU_LIMIT",
                            sandbox.id, sandbox.pid, sandbox.cpu, c.max_cpu, c.cpu_window)
                self.pool.terminate(sandbox, "CPU_LIMIT")
        for pid in list(self._procs):
            if pid not in live:
                self._procs.pop(pid, None)
                self._strikes.pop(pid, None)
                self._children.pop(pid, None)
