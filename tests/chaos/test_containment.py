"""Tools that try to leave their sandbox or hit the zygote and their neighbours (issue 12, items 2 and 3).

Real servers serve ``escape_agent.py`` (offline model: ``/tool arg=value``) under
three containments: ``pidns-user`` (root server, ``--sandbox-user nobody``: user +
PID namespaces), ``pidns-root`` (root server, sandboxes root: a PID namespace)
and ``subreaper`` (the fallback, forced with ``MYAGENT_SANDBOX_CONTAINMENT``).
Processes are found by pid: every process of a sandbox's PID namespace, or its
descendants in the fallback. Everything a test saw is killed by pid at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import psutil
import pytest

from myagent.client import ClientSession
from tests.chaos.helpers import (gone, namespace_members, own_pid_namespace, place_two, status, wait_gone,
                                 wait_ready_sandboxes)
from tests.serverproc import AGENTS, ServerProcess, alive, kill_pids

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60),
              pytest.mark.skipif(os.getuid() != 0, reason="--sandbox-user and the root modes need root")]

ESCAPE_AGENT = AGENTS / "escape_agent.py"
NAMESPACED = ("pidns-user", "pidns-root")
ALL_MODES = (*NAMESPACED, "subreaper")


def _namespaces_available() -> bool:
    from myagent.sandbox import containment

    return containment.probe().mode == containment.PID_NAMESPACE


NEEDS_NAMESPACES = pytest.mark.skipif(not _namespaces_available(), reason="PID namespaces are not available")


def modes(*names: str) -> Any:
    return pytest.mark.parametrize("mode", [pytest.param(n, marks=NEEDS_NAMESPACES) if n in NAMESPACED else n
                                            for n in names])


async def start(chaos: Any, mode: str, *args: str) -> ServerProcess:
    """A server in ``mode``; checks that /status reports that containment for every sandbox."""
    cli = ("--sandbox-user", "nobody") if mode == "pidns-user" else ()
    env = {"MYAGENT_SANDBOX_CONTAINMENT": "subreaper"} if mode == "subreaper" else {}
    srv = await chaos.astart(*cli, *args, agent=ESCAPE_AGENT, llm="offline", env=env)
    doc = await wait_ready_sandboxes(srv, 2)
    expected = "subreaper" if mode == "subreaper" else "pid-namespace"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while doc["containment"] != expected or any(s["containment"] != expected for s in doc["sandboxes"]):
        assert loop.time() < deadline, (mode, doc["containment"], doc["sandboxes"])
        await asyncio.sleep(0.05)
        doc = await status(srv)
    return srv


async def call(session: ClientSession, command: str, timeout: float = 30.0) -> str:
    """Run one ``/tool ...`` command; the tool's result."""
    final, events = await session.ask(command, timeout=timeout)
    results = [e["content"] for e in events if e["event"] == "agent.tool_result"]
    assert results, (command, final)
    return results[0]


def members(sandbox_pid: int) -> set[int]:
    """Every process of the sandbox (by pid), from its namespace or, without one, its tree."""
    try:
        return set(namespace_members(sandbox_pid))
    except (OSError, psutil.NoSuchProcess):
        return set()


def sandbox_doc(doc: dict, pid: int) -> dict:
    return next(s for s in doc["sandboxes"] if s["pid"] == pid)


async def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert loop.time() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.05)


# Item 2: processes stay in their sandbox, are counted, and die with it ---------------------------
@modes(*ALL_MODES)
async def test_setsid_children_are_counted_and_die_with_their_sandbox(mode: str, chaos, timings) -> None:
    """300 fork()+setsid() children: before, 179 survived the sandbox's kill and none was counted."""
    # Forking 300 children blocks the tool for a while on a loaded host: this checks containment,
    # not the heartbeat (FAST times a blocked loop out after 1.5 s).
    srv = await start(chaos, mode, "--sandbox-max-procs", "400", "--max-memory", "0", "--max-cpu", "0",
                      "--worker-timeout", "15")
    client = await chaos.client(srv)
    a, pid_a, b, pid_b = await place_two(srv, client)
    seen: set[int] = set()
    try:
        assert await call(a, "/setsid_swarm count=300 seconds=120") == "forked 300 of 300"
        seen = members(pid_a)
        assert len(seen) == 301, len(seen)  # the sandbox and its 300 children, sessions of their own or not

        async def counted() -> dict | None:
            doc = sandbox_doc(await status(srv), pid_a)
            return doc if doc["procs"] == 301 and doc["tasks"] >= 301 else None

        doc = await wait_until(counted, 5, "/status counts the 300 children")
        children_rss = sum(psutil.Process(pid).memory_info().rss for pid in seen - {pid_a})
        assert doc["rss_bytes"] > 0.9 * children_rss, (doc["rss_bytes"], children_rss)

        killed = time.monotonic()
        os.kill(pid_a, signal.SIGKILL)  # the sandbox alone: its children left its process group
        left = await asyncio.to_thread(wait_gone, seen, 3.0)
        assert not left, f"{len(left)} of 300 children survived their sandbox: {left[:5]}"
        timings[f"containment.setsid_swarm_300.{mode}"] = {"kill_to_all_gone_s": round(time.monotonic() - killed, 3)}

        notice = await a.next_event(10)
        assert notice["event"] == "system.notice" and notice["metadata"]["restored"] is True, notice
        assert (await call(b, "/census")).startswith("pid=")
        doc = await wait_ready_sandboxes(srv, 2)
        assert pid_b in {s["pid"] for s in doc["sandboxes"]}
    finally:
        kill_pids(seen)


@modes("pidns-user", "subreaper")
async def test_a_daemon_counts_against_the_memory_cap_and_dies_with_its_sandbox(mode: str, chaos, timings) -> None:
    """A double-forked 300 MiB daemon: before, /status said 43 MiB and it outlived everything."""
    srv = await start(chaos, mode)  # FAST: --max-memory 200MB, --limit-strikes 2
    client = await chaos.client(srv)
    a, pid_a, b, pid_b = await place_two(srv, client)
    seen: set[int] = set()
    try:
        turn = asyncio.create_task(a.ask("/daemons count=1 mb=300 seconds=120 wait=30", timeout=30))

        async def daemon_up() -> set[int] | None:
            now = members(pid_a)
            return now if len(now) >= 2 else None

        seen = await wait_until(daemon_up, 10, "the daemon started")
        final, events = await turn
        assert final["event"] == "agent.interrupted" and final["metadata"]["reason"] == "MEMORY_LIMIT", final
        calls = [e for e in events if e["event"] == "agent.tool_call"]
        assert calls and calls[0]["metadata"]["tool"] == "daemons"
        left = await asyncio.to_thread(wait_gone, seen, 3.0)
        assert not left, f"the daemon survived its sandbox: {left}"
        doc = await wait_ready_sandboxes(srv, 2)
        assert doc["restarts"]["by_reason"] == {"MEMORY_LIMIT": 1}
        assert pid_b in {s["pid"] for s in doc["sandboxes"]}
        assert (await call(b, "/census")).startswith("pid=")
    finally:
        kill_pids(seen)


@NEEDS_NAMESPACES
async def test_descendants_count_in_status_memory_and_processes(chaos, timings) -> None:
    """Three double-forked 100 MiB daemons: /status counts their memory and their processes."""
    srv = await start(chaos, "pidns-user", "--max-memory", "0")
    client = await chaos.client(srv)
    a = await client.create_session()
    doc = await status(srv)
    pid_a = next(s["pid"] for s in doc["sandboxes"] if s["sessions"])
    seen: set[int] = set()
    try:
        assert (await call(a, "/daemons count=3 mb=100 seconds=120")).startswith("3 daemons")
        seen = members(pid_a)
        assert len(seen) == 4
        real = sum(psutil.Process(pid).memory_info().rss for pid in seen)

        async def counted() -> dict | None:
            doc = sandbox_doc(await status(srv), pid_a)
            return doc if doc["procs"] == 4 and doc["rss_bytes"] >= 300 << 20 else None

        doc = await wait_until(counted, 5, "/status counts the daemons")
        assert abs(doc["rss_bytes"] - real) < 0.1 * real, (doc["rss_bytes"], real)
        timings["containment.three_100MiB_daemons"] = {"status_rss_mib": doc["rss_bytes"] >> 20,
                                                       "real_rss_mib": real >> 20, "procs": doc["procs"]}
    finally:
        kill_pids(seen)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
@modes("pidns-user", "subreaper")
async def test_no_tool_process_outlives_the_server(mode: str, how: str, chaos, timings) -> None:
    """Detached Popen, setsid children and daemons, then the server stops or is killed: none alive 5 s later."""
    srv = await start(chaos, mode, "--max-memory", "0")
    client = await chaos.client(srv)
    a = await client.create_session()
    doc = await status(srv)
    pid_a = next(s["pid"] for s in doc["sandboxes"] if s["sessions"])
    seen: set[int] = set()
    try:
        assert (await call(a, "/detached seconds=120")).startswith("started")
        assert await call(a, "/setsid_swarm count=20 seconds=120") == "forked 20 of 20"
        assert (await call(a, "/daemons count=2 mb=10 seconds=120")).startswith("2 daemons")
        seen = members(pid_a)
        assert len(seen) == 24, len(seen)  # the sandbox, sleep, 20 children, 2 daemons
        await client.close()
        stopped = time.monotonic()
        srv.proc.send_signal(getattr(signal, how))
        await asyncio.to_thread(srv.proc.wait, 15)
        dead = await wait_until(lambda: asyncio.to_thread(lambda: not alive(seen) and time.monotonic()), 5,
                                "every tool process dead")
        # Zombies count too: after a SIGKILL of the front, the host's PID 1 reaps the zygote and the sandboxes.
        left = await asyncio.to_thread(wait_gone, seen, 5.0)
        assert not left, f"{how} of the server left {len(left)} tool processes: {left[:5]}"
        timings[f"containment.server_{how}.{mode}"] = {"signal_to_all_dead_s": round(dead - stopped, 3),
                                                       "signal_to_all_reaped_s": round(time.monotonic() - stopped, 3)}
    finally:
        kill_pids(seen)


@modes(*ALL_MODES)
async def test_a_fork_bomb_is_capped_and_its_sandbox_replaced(mode: str, chaos, timings) -> None:
    """A fork bomb (bounded at 1023 processes): before, 791 host processes and 762 survivors."""
    srv = await start(chaos, mode, "--sandbox-max-procs", "32", "--max-memory", "0", "--max-cpu", "0")
    client = await chaos.client(srv)
    a, pid_a, b, pid_b = await place_two(srv, client)
    seen: set[int] = set()
    host_before = len(psutil.pids())
    peak = host_peak = 0
    latencies = []
    try:
        started = time.monotonic()
        turn = asyncio.create_task(a.ask("/fork_bomb depth=9 seconds=60 wait=30", timeout=40))
        while not turn.done():
            now = members(pid_a)
            seen |= now
            peak = max(peak, len(now))
            host_peak = max(host_peak, len(psutil.pids()) - host_before)
            t0 = time.monotonic()
            assert (await call(b, "/census")).startswith("pid=")
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.1)
        final, _ = await turn
        assert final["event"] == "agent.interrupted" and final["metadata"]["reason"] == "PROCESS_LIMIT", final
        detected = time.monotonic() - started
        left = await asyncio.to_thread(wait_gone, seen, 3.0)
        assert not left, f"{len(left)} bomb processes survived: {left[:5]}"
        if mode == "pidns-user":
            assert peak <= 32, peak  # RLIMIT_NPROC of its user namespace: processes and threads
        elif mode == "pidns-root":
            assert peak <= 300, peak  # pid_max of its namespace
        assert max(latencies) < 1.0, latencies
        doc = await wait_ready_sandboxes(srv, 2)
        assert doc["restarts"]["by_reason"] == {"PROCESS_LIMIT": 1}
        assert pid_b in {s["pid"] for s in doc["sandboxes"]}
        timings[f"containment.fork_bomb.{mode}"] = {
            "peak_processes": peak, "host_processes_peak_increase": host_peak,
            "start_to_interrupted_s": round(detected, 3), "neighbour_latency_max_s": round(max(latencies), 4)}
    finally:
        kill_pids(seen)


# Item 3: no signal reaches the zygote, the front process or another sandbox ------------------------
@modes(*NAMESPACED)
async def test_a_tool_cannot_signal_the_zygote_the_front_or_another_sandbox(mode: str, chaos) -> None:
    """Before, with --sandbox-user, kill(getppid()) took the zygote (and every sandbox) down."""
    srv = await start(chaos, mode)
    client = await chaos.client(srv)
    a, pid_a, b, pid_b = await place_two(srv, client)
    doc = await status(srv)
    zygote, front = doc["zygote_pid"], srv.proc.pid
    assert own_pid_namespace(pid_a)

    assert await call(a, "/kill_parent") == "getppid() = 0: the parent is outside this PID namespace"
    for target in (zygote, front, pid_b):
        assert await call(a, f"/kill_pid pid={target}") == f"kill({target}, 9): ProcessLookupError"
    assert await call(a, "/find_zygotes") == "zygotes: 1"  # itself (a fork of the zygote), nothing else
    census = await call(a, "/census")
    assert census.startswith("pid=1 ppid=0") and "visible=1 " in census, census
    assert (await call(a, "/kill_everyone")).startswith("kill(-1, 9)")  # PID 1 itself is spared

    for pid in (zygote, front, pid_a, pid_b):
        assert [state for _, state in gone([pid])] not in ([], [psutil.STATUS_ZOMBIE]), pid  # alive
    assert (await call(a, "/census")).startswith("pid=1")
    assert (await call(b, "/census")).startswith("pid=1")
    doc = await status(srv)
    assert doc["zygote_pid"] == zygote and doc["restarts"]["total"] == 0, doc["restarts"]
    assert {pid_a, pid_b} == {s["pid"] for s in doc["sandboxes"]}
    assert srv.get("/ready")[0] == 200


# Reporting --------------------------------------------------------------------------------------
@modes("pidns-user", "subreaper")
async def test_the_containment_in_force_is_logged_at_start(mode: str, chaos) -> None:
    srv = await start(chaos, mode)
    doc = await status(srv)
    assert doc["limits"]["sandbox_max_procs"] == 64
    if mode == "subreaper":
        assert "WARNING myagent.sandbox.containment: sandbox containment: subreaper sweep (no PID namespace: " \
               "MYAGENT_SANDBOX_CONTAINMENT=subreaper)" in srv.text, srv.text[-2000:]
        assert "sandbox containment: subreaper sweep (sandbox" in srv.text
    else:
        assert ("INFO    myagent.sandbox.containment: sandbox containment: pid namespace: each sandbox is PID 1 of "
                "its own (user + PID namespace, private /proc, RLIMIT_NPROC per sandbox)") in srv.text, srv.text[-2000:]
        assert "sandbox containment: PID namespace (sandbox" in srv.text


async def test_an_unknown_containment_is_refused_at_start() -> None:
    srv = ServerProcess(ESCAPE_AGENT, "--workers", "1", llm="offline",
                        env={"MYAGENT_SANDBOX_CONTAINMENT": "cgroups"})
    try:
        with pytest.raises(RuntimeError, match="server exited with"):
            await asyncio.to_thread(srv.start, 20)
        assert "MYAGENT_SANDBOX_CONTAINMENT='cgroups'" in srv.text, srv.text[-2000:]
    finally:
        srv.stop()
