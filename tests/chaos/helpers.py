"""Assertions and small tools shared by the chaos tests."""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

import psutil

from myagent.client import TERMINAL, AgentClient, ClientSession
from tests.serverproc import AGENTS, SCRIPTS, ServerProcess

CHAOS_AGENT = AGENTS / "chaos_agent.py"
CHAOS_SCRIPT = SCRIPTS / "chaos.json"
CHAOS_LLM = f"scripted:{CHAOS_SCRIPT}"

# Small timings: a blocked loop is caught after 1.5 s, a CPU hog after 1 s over
# 80 %, a memory hog two 0.1 s samples after crossing 200 MB.
FAST: tuple[str, ...] = (
    "--watch-interval", "0.1", "--worker-timeout", "1.5", "--worker-heartbeat", "0.25",
    "--kill-grace", "0.5", "--max-memory", "200MB", "--max-cpu", "80", "--cpu-window", "1",
    "--limit-strikes", "2", "--graceful-timeout", "1", "--worker-start-timeout", "10",
    "--rate-limit", "0",  # the chaos clients send fast on purpose; rate limiting is tested elsewhere
)

ECHO_RE = re.compile(r"You said: (?P<user>.*)\. Before that: (?P<previous>.*)\. Turn (?P<turn>\d+)\.$", re.S)


async def timed_turn(session: ClientSession, text: str, timeout: float = 20.0) -> list[tuple[float, dict]]:
    """Send ``text``; return the turn's events through its terminal one, each with its arrival time."""
    out = []
    async for event in session.send(text, timeout=timeout):
        out.append((time.monotonic(), event))
    return out


def echo(event: dict) -> dict[str, Any]:
    """Parse the scripted default reply (``You said: X. Before that: Y. Turn N.``)."""
    assert event["event"] == "agent.final_answer", event
    match = ECHO_RE.match(event["content"])
    assert match, event["content"]
    return {"user": match["user"], "previous": match["previous"], "turn": int(match["turn"])}


async def ask_echo(session: ClientSession, text: str, timeout: float = 20.0) -> dict[str, Any]:
    terminal, _ = await session.ask(text, timeout=timeout)
    reply = echo(terminal)
    assert reply["user"] == text, reply
    return reply


def assert_gapless(session: ClientSession) -> None:
    """Every session-scoped event this client received: seq 1, 2, 3... with no gap and no repeat."""
    seqs = [e["seq"] for e in session.history if isinstance(e.get("seq"), int)]
    assert seqs == list(range(1, len(seqs) + 1)), seqs


def events_named(session: ClientSession, name: str) -> list[dict]:
    return [e for e in session.history if e.get("event") == name]


async def status(srv: ServerProcess) -> dict:
    return await asyncio.to_thread(srv.status)


async def get(srv: ServerProcess, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(srv.get, path)


async def sandbox_loads(srv: ServerProcess) -> dict[int, int]:
    """pid -> number of sessions, for the sandboxes /status lists."""
    return {s["pid"]: s["sessions"] for s in (await status(srv))["sandboxes"]}


async def place_two(srv: ServerProcess, client: AgentClient) -> tuple[ClientSession, int, ClientSession, int]:
    """Two sessions on two different sandboxes (placement is least-loaded); return (a, pid_a, b, pid_b)."""
    a = await client.create_session()
    loads = await sandbox_loads(srv)
    pid_a = next(pid for pid, n in loads.items() if n == 1)
    b = await client.create_session()
    loads = await sandbox_loads(srv)
    assert loads[pid_a] == 1, loads
    pid_b = next(pid for pid, n in loads.items() if n == 1 and pid != pid_a)
    srv.track_children()
    return a, pid_a, b, pid_b


async def wait_ready_sandboxes(srv: ServerProcess, count: int, timeout: float = 10.0) -> dict:
    """Wait until /status lists ``count`` ready sandboxes (the pool is topped up again)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        doc = await status(srv)
        ready = [s for s in doc["sandboxes"] if s["state"] == "ready"]
        if len(ready) >= count:
            srv.track_children()
            return doc
        assert loop.time() < deadline, f"only {len(ready)} ready sandboxes after {timeout}s: {doc['sandboxes']}"
        await asyncio.sleep(0.05)


async def wait_fds(pid: int, baseline: int, timeout: float = 5.0) -> int:
    """Poll the front process's open fd count until it is back at ``baseline``; return the last count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    count = num_fds(pid)
    while count > baseline and loop.time() < deadline:
        await asyncio.sleep(0.05)
        count = num_fds(pid)
    return count


# Processes -------------------------------------------------------------------------------
def gone(pids: set[int] | list[int]) -> list[tuple[int, str]]:
    """The pids that still exist, with their status ("zombie" included: a zombie is a leak too)."""
    left = []
    for pid in pids:
        try:
            left.append((pid, psutil.Process(pid).status()))
        except psutil.NoSuchProcess:
            pass
    return left


def wait_gone(pids: set[int] | list[int], timeout: float = 3.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    left = gone(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = gone(pids)
    return left


def own_pid_namespace(pid: int) -> bool:
    """True when ``pid`` is in a PID namespace other than ours (a contained sandbox is PID 1 of its own)."""
    return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")


def namespace_members(pid: int) -> list[int]:
    """Host pids of every process in ``pid``'s PID namespace ([pid] and its descendants if it shares ours)."""
    if not own_pid_namespace(pid):
        return [pid] + [p.pid for p in tree(pid)]
    ns = os.readlink(f"/proc/{pid}/ns/pid")
    out = []
    for other in psutil.pids():
        try:
            if os.readlink(f"/proc/{other}/ns/pid") == ns:
                out.append(other)
        except OSError:
            pass
    return out


def host_pid(sandbox_pid: int, pid: int) -> int:
    """The host's pid of the process a tool in sandbox ``sandbox_pid`` knows as ``pid`` (while the sandbox
    lives). Tools inside a PID namespace see its numbering only; the last NSpid field is that number."""
    if not own_pid_namespace(sandbox_pid):
        return pid
    for member in namespace_members(sandbox_pid):
        try:
            with open(f"/proc/{member}/status") as f:
                line = next(line for line in f if line.startswith("NSpid:"))
        except (OSError, StopIteration):
            continue
        if int(line.split()[-1]) == pid:
            return member
    raise LookupError(f"no process {pid} in the PID namespace of sandbox {sandbox_pid}")


def num_fds(pid: int) -> int:
    return psutil.Process(pid).num_fds()


def tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def zombies(pid: int) -> list[int]:
    out = []
    for child in tree(pid):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return out


__all__ = [
    "CHAOS_AGENT", "CHAOS_LLM", "CHAOS_SCRIPT", "ECHO_RE", "FAST", "TERMINAL", "assert_gapless", "ask_echo", "echo",
    "events_named", "get", "gone", "host_pid", "namespace_members", "num_fds", "own_pid_namespace", "place_two",
    "sandbox_loads", "status",
    "timed_turn", "tree", "wait_fds", "wait_gone", "wait_ready_sandboxes", "zombies",
]
