"""RestartPolicy with a fake clock: intensity, backoff, window, exhaustion."""

import pytest

from myagent.supervisor.restart import RestartPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_the_cap():
    clock = Clock()
    policy = RestartPolicy(max_restarts=10, window=60, backoff=0.1, backoff_max=0.5, clock=clock)
    assert [policy.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.total == 5 and policy.recent == 5


def test_budget_exhausted_within_the_window():
    clock = Clock()
    policy = RestartPolicy(max_restarts=3, window=10, clock=clock)
    assert all(policy.next_delay() is not None for _ in range(3))
    clock.now += 5
    assert policy.next_delay() is None and policy.exhausted
    clock.now += 100  # exhaustion is final until reset(): the agent is declared unavailable
    assert policy.next_delay() is None


def test_restarts_spread_over_time_never_exhaust():
    clock = Clock()
    policy = RestartPolicy(max_restarts=3, window=10, backoff=0.05, clock=clock)
    for _ in range(20):
        assert policy.next_delay() == 0.05  # each one alone in its window: no backoff growth
        clock.now += 11
    assert not policy.exhausted and policy.total == 20


def test_window_slides():
    clock = Clock()
    policy = RestartPolicy(max_restarts=2, window=10, clock=clock)
    policy.next_delay()
    clock.now += 6
    policy.next_delay()
    clock.now += 5  # the first restart left the window
    assert policy.recent == 1
    assert policy.next_delay() is not None


def test_reset_restores_the_budget():
    policy = RestartPolicy(max_restarts=1, window=60, clock=Clock())
    policy.next_delay()
    assert policy.next_delay() is None
    policy.reset()
    assert policy.next_delay() is not None and not policy.exhausted


@pytest.mark.parametrize("max_restarts", [0])
def test_zero_budget_never_restarts(max_restarts):
    assert RestartPolicy(max_restarts=max_restarts, clock=Clock()).next_delay() is None
