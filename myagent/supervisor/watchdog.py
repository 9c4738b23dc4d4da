"""The watchdog: samples every sandbox with psutil and replaces the ones over a limit.

Memory is the RSS of the sandbox process plus the processes its tools spawned (``memory_info().rss``: one read of
/proc/PID/statm; USS would need smaps, far too slow to sample every 250 ms).
CPU is percent of one core over the sample interval (children's share is
refreshed about once a second: listing them walks /proc). A limit must be crossed
on ``strikes`` consecutive samples before anything is killed, so one noisy
sample kills nothing. A sandbox whose heartbeat is older than
``--worker-timeout`` (its event loop is blocked) is replaced too. The OS
rlimits set in the sandbox itself are the hard ceiling between samples.

Every process a tool starts stays a descendant of its sandbox, whatever it does
to its session (``myagent.sandbox.containment``), so the descendants counted here
are all of them. With the children's sample come the number of processes and
of tasks (threads included, as the kernel counts them): a sandbox that holds
``--sandbox-max-procs`` tasks for ``--limit-strikes`` samples (a fork bomb at the
kernel's cap), or is found over it (where the kernel cannot enforce it), is
replaced: PROCESS_LIMIT. The watchdog also reads which containment each sandbox is in
(its PID namespace differs from ours, or not) and logs each kind once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from typing import Any, Callable

import psutil

from myagent.supervisor.pool import SandboxPool
from myagent.supervisor.sandboxes import DRAINING, READY, Sandbox

log = logging.getLogger("myagent.supervisor.watchdog")

PID_NAMESPACE, SUBREAPER, UNKNOWN = "pid-namespace", "subreaper", "unknown"
PROCESS_LIMIT = "PROCESS_LIMIT"


def pid_namespace(pid: int | str) -> str | None:
    """The identity of ``pid``'s PID namespace (``pid:[4026531836]``), None if unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


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
        self._strikes: dict[int, tuple[Strikes, Strikes, Strikes]] = {}
        self.max_procs = getattr(config, "sandbox_max_procs", 0)
        self._own_pid_namespace = pid_namespace("self")
        self._containment_seen: set[str] = set()

    @property
    def containment(self) -> str:
        """What contains the sandboxes now: one kind, ``mixed: ...``, or ``unknown`` before a sample."""
        kinds = sorted({s.containment for s in self.pool.sandboxes.values() if s.containment})
        if not kinds:
            return UNKNOWN
        return kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(kinds)

    def _detect_containment(self, sandbox: Sandbox) -> None:
        """A sandbox in a PID namespace other than ours is PID 1 of its own; otherwise the
        sandbox side made it a subreaper. Logged once per kind."""
        ns = pid_namespace(sandbox.pid)
        if ns is None or self._own_pid_namespace is None:
            kind = UNKNOWN
        else:
            kind = PID_NAMESPACE if ns != self._own_pid_namespace else SUBREAPER
        sandbox.containment = kind
        if kind in self._containment_seen:
            return
        self._containment_seen.add(kind)
        if kind == PID_NAMESPACE:
            log.info("sandbox containment: PID namespace (sandbox %s, pid %s is PID 1 of its own): every process "
                     "its tools start is counted and dies with it", sandbox.id, sandbox.pid)
        else:
            log.warning("sandbox containment: %s (sandbox %s, pid %s shares our PID namespace): its processes "
                        "are counted and swept when it dies, but it can signal other processes of its uid",
                        "subreaper sweep" if kind == SUBREAPER else "unknown", sandbox.id, sandbox.pid)

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

    def _over_procs(self, strikes: Strikes, sandbox: Sandbox) -> bool:
        """At the cap for ``strikes`` counts in a row (where the kernel holds it there), or over it
        at all (where it cannot: root sandboxes, no namespaces), which no noisy sample explains."""
        at_cap = 0 < self.max_procs <= sandbox.tasks
        return strikes.observe(at_cap) or (at_cap and sandbox.tasks > self.max_procs)

    @staticmethod
    def family() -> dict[int, list[int]]:
        """Parent pid -> child pids, for every process of the host: one read of /proc/PID/stat each,
        shared by all the sandboxes of a sample (psutil's children() walks /proc once per call)."""
        family: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # gone meanwhile
            # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so parse after the last ")".
            ppid = int(stat[stat.rfind(b")") + 2:].split(b" ", 2)[1])
            family.setdefault(ppid, []).append(int(name))
        return family

    @staticmethod
    def descendants(pid: int, family: dict[int, list[int]]) -> list[int]:
        out, todo = [], [pid]
        while todo:
            for child in family.get(todo.pop(), ()):
                out.append(child)
                todo.append(child)
        return out

    def _sample_children(self, sandbox: Sandbox, proc: psutil.Process, family: dict[int, list[int]]) -> None:
        """Processes a tool spawned count against their sandbox's caps. Listing them walks
        /proc, so it runs about once a second rather than every sample."""
        known = self._children.setdefault(sandbox.pid, {})
        rss, cpu, seen = 0, 0.0, set()
        try:
            tasks = proc.num_threads()
        except psutil.NoSuchProcess:
            tasks = 1
        for pid in self.descendants(sandbox.pid, family):
            try:
                tracked = known.get(pid) or known.setdefault(pid, psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue  # gone since the listing
            seen.add(pid)
            threads = 1  # a zombie holds its pid (and its place under the kernel's cap) all the same
            try:
                with tracked.oneshot():
                    threads = max(1, tracked.num_threads())
                    rss += tracked.memory_info().rss
                    cpu += tracked.cpu_percent(None)  # 0.0 on the first sample of a child
            except psutil.NoSuchProcess:
                pass
            tasks += threads
        for pid in list(known):
            if pid not in seen:
                del known[pid]
        sandbox.children_rss, sandbox.children_cpu = rss, cpu
        sandbox.procs, sandbox.tasks = 1 + len(seen), tasks

    def sample(self) -> None:
        c = self.config
        now = self.clock()
        self._ticks += 1
        live = set()
        family: dict[int, list[int]] | None = None
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
            if not sandbox.containment:
                self._detect_containment(sandbox)
            try:
                with proc.oneshot():
                    sandbox.rss = proc.memory_info().rss
                    sandbox.cpu = proc.cpu_percent(None)
            except psutil.NoSuchProcess:
                continue
            counted = self._ticks % self.children_every == 0
            if counted:
                family = self.family() if family is None else family
                self._sample_children(sandbox, proc, family)
            sandbox.rss += sandbox.children_rss
            sandbox.cpu += sandbox.children_cpu
            mem, cpu, procs = self._strikes.setdefault(sandbox.pid, (Strikes(self.memory_strikes),
                                                                     Strikes(self.cpu_strikes),
                                                                     Strikes(c.limit_strikes)))
            if mem.observe(c.max_memory > 0 and sandbox.rss > c.max_memory):
                log.warning("sandbox %s (pid %s) RSS %d MiB over --max-memory %d MiB: MEMORY_LIMIT",
                            sandbox.id, sandbox.pid, sandbox.rss >> 20, c.max_memory >> 20)
                self.pool.terminate(sandbox, "MEMORY_LIMIT")
            elif cpu.observe(c.max_cpu > 0 and sandbox.cpu > c.max_cpu):
                log.warning("sandbox %s (pid %s) CPU %.0f%% over --max-cpu %.0f%% for %.1fs: CPU_LIMIT",
                            sandbox.id, sandbox.pid, sandbox.cpu, c.max_cpu, c.cpu_window)
                self.pool.terminate(sandbox, "CPU_LIMIT")
            elif counted and self._over_procs(procs, sandbox):
                log.warning("sandbox %s (pid %s) holds %d tasks in %d processes, --sandbox-max-procs is %d: "
                            "PROCESS_LIMIT", sandbox.id, sandbox.pid, sandbox.tasks, sandbox.procs, self.max_procs)
                self.pool.terminate(sandbox, PROCESS_LIMIT)
        for pid in list(self._procs):
            if pid not in live:
                self._procs.pop(pid, None)
                self._strikes.pop(pid, None)
                self._children.pop(pid, None)
