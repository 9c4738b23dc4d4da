"""The watchdog's decision logic: consecutive strikes, caps, heartbeats, and the process count and
containment of a sandbox (real stand-in processes)."""

import os
import subprocess
import sys
from types import SimpleNamespace

import psutil
import pytest

from myagent.settings import config_from
from myagent.supervisor.sandboxes import READY, Sandbox
from myagent.supervisor.watchdog import PID_NAMESPACE, PROCESS_LIMIT, SUBREAPER, Strikes, Watchdog


def test_one_noisy_sample_kills_nothing():
    strikes = Strikes(3)
    assert [strikes.observe(v) for v in (True, True, False, True, True, True)] == [
        False, False, False, False, False, True]


def test_a_single_strike_limit_acts_at_once():
    assert Strikes(1).observe(True) and not Strikes(0).observe(False)


class FakePool:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandboxes = {sandbox.id: sandbox}
        self.killed: list[tuple[int, str]] = []

    def terminate(self, sandbox, reason, *, polite=False, grace=None):
        self.killed.append((sandbox.id, reason))
        sandbox.kill_reason = reason


def watch(**options):
    config = config_from({"watch-interval": "0.25", **options})
    # This test process plays the sandbox: psutil samples it for real.
    sandbox = Sandbox(id=1, pid=os.getpid(), state=READY)
    pool = FakePool(sandbox)
    clock = SimpleNamespace(now=sandbox.last_beat)
    return Watchdog(pool, config, clock=lambda: clock.now), pool, sandbox, clock


def test_memory_cap_needs_consecutive_samples():
    dog, pool, sandbox, _ = watch(**{"max-memory": "1MB", "limit-strikes": "2"})
    dog.sample()
    assert pool.killed == [] and sandbox.rss > 1_000_000
    dog.sample()
    assert pool.killed == [(1, "MEMORY_LIMIT")]


def test_under_the_caps_nothing_happens():
    dog, pool, sandbox, _ = watch(**{"max-memory": "64GiB", "max-cpu": "100000"})
    for _ in range(5):
        dog.sample()
    assert pool.killed == []


def test_stale_heartbeat_is_worker_timeout():
    dog, pool, sandbox, clock = watch(**{"worker-timeout": "2"})
    clock.now += 1.5
    dog.sample()
    assert pool.killed == []
    clock.now += 1.0
    dog.sample()
    assert pool.killed == [(1, "WORKER_TIMEOUT")]


def test_cpu_window_sets_the_strikes():
    dog, *_ = watch(**{"cpu-window": "3", "watch-interval": "0.25"})
    assert dog.cpu_strikes == 12


# Processes: every descendant counted, the cap, the containment in force --------------------------
# A stand-in sandbox: a process with `children` sleeping children and `threads` extra threads.
_PARENT = """
import subprocess, sys, threading, time
kids = [subprocess.Popen(["sleep", "30"]) for _ in range({children})]
for _ in range({threads}):
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
print("ready", flush=True)
time.sleep(30)
"""


@pytest.fixture
def stand_in():
    started: list[subprocess.Popen] = []

    def start(children: int = 0, threads: int = 0, prefix: tuple[str, ...] = ()) -> int:
        proc = subprocess.Popen([*prefix, sys.executable, "-c", _PARENT.format(children=children, threads=threads)],
                                stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc.pid

    yield start
    for proc in started:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait(5)


def watch_pid(pid: int, **options):
    config = config_from({"watch-interval": "1", "max-memory": "0", **options})
    sandbox = Sandbox(id=1, pid=pid, state=READY)
    pool = FakePool(sandbox)
    clock = SimpleNamespace(now=sandbox.last_beat)
    return Watchdog(pool, config, clock=lambda: clock.now), pool, sandbox


def test_every_descendant_is_counted_with_its_threads(stand_in):
    pid = stand_in(children=5, threads=3)
    dog, pool, sandbox = watch_pid(pid)
    dog.sample()  # children are counted every second: every sample at --watch-interval 1
    assert sandbox.procs == 1 + 5
    assert sandbox.tasks >= 1 + 3 + 5  # the interpreter may run a thread of its own
    assert pool.killed == []


def test_a_sandbox_held_at_the_process_cap_is_replaced_after_the_strikes(stand_in):
    pid = stand_in(children=3)
    dog, pool, sandbox = watch_pid(pid, **{"sandbox-max-procs": "4", "limit-strikes": "2"})
    dog.sample()
    assert sandbox.tasks == 4 and pool.killed == []  # at the cap: where the kernel holds it, a strike
    dog.sample()
    assert pool.killed == [(1, PROCESS_LIMIT)]


def test_a_sandbox_over_the_process_cap_is_replaced_at_once(stand_in):
    pid = stand_in(children=6)
    dog, pool, sandbox = watch_pid(pid, **{"sandbox-max-procs": "4", "limit-strikes": "3"})
    dog.sample()  # over it: the kernel did not hold the cap (root, or no namespaces)
    assert pool.killed == [(1, PROCESS_LIMIT)]


def test_no_process_cap_when_it_is_off(stand_in):
    pid = stand_in(children=6)
    dog, pool, sandbox = watch_pid(pid, **{"sandbox-max-procs": "0", "limit-strikes": "1"})
    dog.sample()
    assert sandbox.procs == 7 and pool.killed == []


def test_containment_is_read_from_the_pid_namespace(stand_in, caplog):
    dog, pool, sandbox = watch_pid(stand_in())
    assert dog.containment == "unknown"
    with caplog.at_level("INFO", logger="myagent.supervisor.watchdog"):
        dog.sample()
        dog.sample()
    assert sandbox.containment == SUBREAPER and dog.containment == SUBREAPER  # it shares our namespace
    assert [r.levelname for r in caplog.records if "containment" in r.getMessage()] == ["WARNING"]  # once


@pytest.mark.skipif(os.getuid() != 0, reason="unshare --pid needs root here")
def test_a_sandbox_in_a_pid_namespace_of_its_own_is_reported_so(stand_in):
    dog, pool, sandbox = watch_pid(stand_in(prefix=("unshare", "--pid", "--fork", "--kill-child")))
    # unshare itself is the watched process here: its child, python, is PID 1 of the new namespace.
    sandbox.pid = psutil.Process(sandbox.pid).children()[0].pid
    dog.sample()
    assert sandbox.containment == PID_NAMESPACE and dog.containment == PID_NAMESPACE
    other = Sandbox(id=2, pid=os.getpid(), state=READY, containment=SUBREAPER)
    pool.sandboxes[2] = other
    assert dog.containment == "mixed: pid-namespace, subreaper"
