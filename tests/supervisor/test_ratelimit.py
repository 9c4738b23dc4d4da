from myagent.supervisor.ratelimit import TokenBucket


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_burst_then_refill():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.strikes == 1
    clock.now += 0.1  # one token back
    assert bucket.take() and bucket.strikes == 0
    assert not bucket.take()


def test_refill_is_capped_at_burst():
    clock = Clock()
    bucket = TokenBucket(rate=100, burst=2, clock=clock)
    clock.now += 60
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_zero_rate_disables():
    bucket = TokenBucket(rate=0, burst=1, clock=Clock())
    assert all(bucket.take() for _ in range(1000))


def test_strikes_count_refusals_in_a_row():
    bucket = TokenBucket(rate=1, burst=1, clock=Clock())
    bucket.take()
    for expected in range(1, 6):
        assert not bucket.take()
        assert bucket.strikes == expected
