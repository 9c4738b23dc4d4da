"""myagent/client/backoff.py: the reconnect policy, without a clock."""

from __future__ import annotations

from myagent.client.backoff import (RECONNECT_FIRST_DELAY, RECONNECT_GIVE_UP, RECONNECT_MAX_DELAY, Backoff)


def test_delays_double_up_to_the_cap_without_jitter():
    b = Backoff(jitter=0.0)
    delays = [b.delay(n) for n in range(1, 9)]
    assert delays[:5] == [0.3, 0.6, 1.2, 2.4, 4.8]
    assert delays[5:] == [RECONNECT_MAX_DELAY] * 3


def test_jitter_stays_within_its_band():
    low, high = Backoff(rand=lambda: 0.0), Backoff(rand=lambda: 0.999999)
    assert low.delay(1) == RECONNECT_FIRST_DELAY * 0.8
    assert abs(high.delay(1) - RECONNECT_FIRST_DELAY * 1.2) < 1e-5
    assert high.delay(50) <= RECONNECT_MAX_DELAY * 1.2


def test_gives_up_after_the_total_budget():
    b = Backoff()
    assert not b.gives_up(0.0, 5.0)
    assert not b.gives_up(RECONNECT_GIVE_UP - 5.0, 5.0)
    assert b.gives_up(RECONNECT_GIVE_UP - 1.0, 5.0)
    assert Backoff(give_up_after=0.0).gives_up(0.0, 0.3)
