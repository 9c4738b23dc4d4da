"""Containment of a sandbox's descendants, with real processes and namespaces (no server).

Each case runs one scenario of ``tests/sandbox/contained.py`` in a fresh
interpreter playing the zygote (as root, or as nobody like the zygote of
``--sandbox-user``) and checks its findings; surviving processes are looked up
by pid with psutil and killed by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from myagent.sandbox import containment
from tests.chaos.helpers import namespace_members, own_pid_namespace

ROOT = Path(__file__).resolve().parents[2]
NEEDS_ROOT = pytest.mark.skipif(os.getuid() != 0, reason="playing the --sandbox-user zygote needs root")
PLAN = containment.probe() if sys.platform == "linux" else containment.Plan()
NEEDS_NAMESPACES = pytest.mark.skipif(PLAN.mode != containment.PID_NAMESPACE,
                                      reason=f"no PID namespaces here: {PLAN.reason}")
MODES = [pytest.param("root", marks=NEEDS_ROOT), pytest.param("user", marks=NEEDS_ROOT)]

pytestmark = [pytest.mark.timeout(30)]


def run(scenario: str, mode: str = "root", timeout: float = 20.0, shared_proc: bool = False) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tests.sandbox.contained", scenario, mode], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "CONTAINED_SHARED_PROC": str(int(shared_proc))})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ns_members(pid: int) -> list[int]:
    """Host pids of every process in ``pid``'s PID namespace, which must be one of its own."""
    assert own_pid_namespace(pid), "not in a PID namespace of its own"
    return namespace_members(pid)


def start(scenario: str, mode: str) -> tuple[subprocess.Popen, dict]:
    """Run a scenario that reports its sandbox, then waits for us."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.sandbox.contained", scenario, mode], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"{scenario} {mode} reported nothing (exit {proc.wait(5)})"
    return proc, json.loads(line)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def survivors(pids: list[int], timeout: float = 2.0) -> list[int]:
    """The pids still alive (zombies count: they hold a pid) after ``timeout``; those are killed."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if psutil.pid_exists(pid)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in left:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    return left


@NEEDS_NAMESPACES
@pytest.mark.parametrize("mode", MODES)
def test_a_sandbox_is_pid_1_of_its_own_namespace_and_sees_only_itself(mode: str) -> None:
    found = run("identity", mode)
    assert found["mode"] == containment.PID_NAMESPACE and found["user_namespace"] == (mode == "user")
    assert found["pid"] == 1 and found["ppid"] == 0
    assert found["host_pid"] == found["forked_pid"]  # what the front process is told
    assert found["proc"] == [1], "its /proc shows its own namespace only"
    assert found["our_proc_intact"], "the sandbox's /proc mount must not propagate to ours"
    if mode == "user":
        assert found["uid"] == 65534 and found["cap_eff"] == "0000000000000000"
        assert found["nproc"] == 16


@NEEDS_NAMESPACES
@pytest.mark.parametrize("mode", MODES)
def test_setsid_children_and_daemons_die_with_the_sandbox(mode: str) -> None:
    proc, found = start("kill_takes_all", mode)
    members: list[int] = []
    try:
        assert found["children"] == 10
        members = ns_members(found["sandbox"])
        # The sandbox, 10 setsid() children and 3 daemons whose parent exited: all in its namespace.
        assert len(members) == 14 and found["sandbox"] in members
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"reaped": found["sandbox"]}
        assert survivors(members, 0.5) == []  # waitpid() returned: the namespace was already empty
    finally:
        stop(proc)
        survivors(members, 0)


@NEEDS_NAMESPACES
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_ends_pid_1(mode: str) -> None:
    found = run("sigterm", mode)
    assert found["code"] == containment.EXIT_TERMINATED and found["seconds"] < 2


@NEEDS_NAMESPACES
@NEEDS_ROOT
def test_rlimit_nproc_caps_one_sandbox_not_its_sibling_of_the_same_uid() -> None:
    found = run("nproc", "user")
    assert found["a"] == {"forked": 15, "error": 11, "linger": 30}  # 16 tasks with itself; EAGAIN
    assert found["b"] == {"forked": 5}


@NEEDS_NAMESPACES
@pytest.mark.parametrize("mode", MODES)
def test_a_sandbox_cannot_signal_the_zygote_or_another_sandbox(mode: str) -> None:
    found = run("signals", mode)
    assert found["parent"] == "getppid() is 0"
    assert found["other_sandbox"] == found["zygote"] == "ProcessLookupError"
    assert found["everyone"] == "ProcessLookupError"  # kill(-1): nobody else in its namespace
    assert found["other_sandbox_alive"]


@NEEDS_NAMESPACES
@pytest.mark.parametrize("mode", MODES)
def test_everything_dies_when_the_zygote_is_killed(mode: str) -> None:
    proc, found = start("zygote_dies", mode)
    members: list[int] = []
    try:
        members = ns_members(found["sandbox"])
        assert len(members) == 14
        proc.send_signal(signal.SIGKILL)  # the zygote dies: parent-death signal, then the namespace
        proc.wait(5)
        assert survivors(members, 2.0) == []
    finally:
        stop(proc)
        survivors(members, 0)


@NEEDS_NAMESPACES
@pytest.mark.parametrize("shared_proc", [False, True], ids=["private-proc", "host-proc"])
@pytest.mark.parametrize("mode", MODES)
def test_pid_1_reaps_orphans_but_not_a_child_its_code_waits_for(mode: str, shared_proc: bool) -> None:
    found = run("reaper", mode, shared_proc=shared_proc)
    assert found["reaped"] == 1 and found["zombies_left"] == []
    assert found["own_code"] == 3


@NEEDS_NAMESPACES
@pytest.mark.parametrize("mode", MODES)
def test_without_a_private_proc_the_namespace_still_contains_and_blocks_signals(mode: str) -> None:
    found = run("identity", mode, shared_proc=True)
    assert found["pid"] == 1 and found["host_pid"] == found["forked_pid"]
    assert len(found["proc"]) > 1  # the host's processes are visible then
    found = run("signals", mode, shared_proc=True)
    assert found["other_sandbox"] == found["zygote"] == found["everyone"] == "ProcessLookupError"
    assert found["other_sandbox_alive"]


@pytest.mark.parametrize("mode", MODES)
def test_subreaper_fallback_keeps_orphans_in_the_tree_and_the_zygote_sweeps_them(mode: str) -> None:
    found = run("subreaper", mode)
    assert found["mode"] == containment.SUBREAPER
    assert found["children_after_double_fork"] == 5  # 3 setsid children + 2 daemons re-parented to it
    assert found["inherited"] == 5 and found["killed"] >= 5
    assert found["left"] == []
    assert survivors(found["tree"], 0.5) == []


@NEEDS_NAMESPACES
@pytest.mark.parametrize("mode", MODES)
def test_a_sandbox_that_clone_refuses_is_forked_plainly_with_a_warning(mode: str) -> None:
    found = run("clone_fails", mode)
    assert found["mode"] == containment.SUBREAPER and found["pid"] == found["forked"]
    assert len(found["warnings"]) == 1 and "No space left on device" in found["warnings"][0]
    assert "subreaper sweep only" in found["warnings"][0]


def test_probe_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(containment.ENV, "subreaper")
    plan = containment.probe()
    assert plan.mode == containment.SUBREAPER and containment.ENV in plan.reason
    assert "subreaper sweep" in plan.describe()
    with pytest.raises(ValueError, match="expected auto"):
        containment.probe("cgroups")


def test_orphan_reaper_waits_for_the_grace_before_reaping(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    reaper = containment.OrphanReaper(main_thread_only=True, grace=5.0, clock=lambda: now[0])
    waited: list[int] = []
    monkeypatch.setattr(containment, "children", lambda pid, main_thread_only=False: [41, 42])
    monkeypatch.setattr(containment, "_zombie_ns_pid", lambda pid: pid if pid == 42 else None)
    monkeypatch.setattr(os, "waitpid", lambda pid, flags: (waited.append(pid), (pid, 0))[1])
    assert reaper.sweep() == 0 and waited == []  # first seen now
    now[0] += 4.9
    assert reaper.sweep() == 0
    now[0] += 0.2
    assert reaper.sweep() == 1 and waited == [42]  # 41 is alive: never waited for
    assert reaper.first_seen == {}
