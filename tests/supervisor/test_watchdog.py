"""The watchdog's decision logic: consecutive strikes, caps, heartbeats (no real processes)."""

import os
from types import SimpleNamespace

from myagent.settings import config_from
from myagent.supervisor.sandboxes import READY, Sandbox
from myagent.supervisor.watchdog import Strikes, Watchdog


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
