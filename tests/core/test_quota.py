from __future__ import annotations

import math

import pytest
from conftest import examples
from fakes import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.core.quota import TokenBucket


def test_starts_full_then_refuses() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time() == pytest.approx(0.5)
    clock.now = 0.5
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


def test_acquire_sleeps_exactly_the_wait() -> None:
    clock = FakeClock()
    slept: list[float] = []
    bucket = TokenBucket(rate=4, burst=1, clock=clock)
    bucket.acquire()

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.sleep(seconds)

    bucket.acquire(sleep=sleep)
    assert slept == [pytest.approx(0.25)]


def test_never_possible_raises() -> None:
    bucket = TokenBucket(rate=0, burst=1, clock=FakeClock())
    assert bucket.try_acquire()
    assert math.isinf(bucket.wait_time())
    with pytest.raises(ValueError, match="cannot acquire"):
        bucket.acquire(sleep=lambda _s: None)
    with pytest.raises(ValueError, match="cannot acquire"):
        TokenBucket(rate=1, burst=1).acquire(2, sleep=lambda _s: None)


def test_set_rate_keeps_tokens_and_changes_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=10, clock=clock)
    for _ in range(10):
        assert bucket.try_acquire()
    bucket.set_rate(10)
    clock.now = 0.5
    assert sum(bucket.try_acquire() for _ in range(10)) == 5


@pytest.mark.parametrize(("rate", "burst"), [(-1, 1), (1, 0), (math.inf, 1)])
def test_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate=rate, burst=burst)


@settings(max_examples=examples(200), deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=50),
    burst=st.integers(min_value=1, max_value=10),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=300),
    window=st.floats(min_value=0.01, max_value=5),
)
def test_window_bound_holds(rate: float, burst: int, gaps: list[float], window: float) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=rate, burst=burst, clock=clock)
    granted: list[float] = []
    for gap in gaps:
        clock.now += gap
        if bucket.try_acquire():
            granted.append(clock.now)
    # Every window [t, t + window] starting at a granted time holds at most burst + rate * window grants.
    for i, start in enumerate(granted):
        inside = sum(1 for t in granted[i:] if t <= start + window)
        assert inside <= burst + rate * window + 1e-9
