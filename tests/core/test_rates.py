"""batch.core.rates: rates over a sliding window, not since the start."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.core.rates import WindowRates


@given(
    rate=st.integers(1, 200),
    step=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
    seconds=st.floats(10, 600, allow_nan=False),
)
def test_a_steady_stream_reads_as_its_rate(rate: int, step: float, seconds: float) -> None:
    rates = WindowRates(10.0, started=0.0)
    now = 0.0
    while now + step <= seconds:
        now += step
        rates.add(now, "DetectLabels", round(rate * step) or 1)
    per_event = (round(rate * step) or 1) / step
    assert rates.rate("DetectLabels", now) == pytest.approx(per_event, rel=0.05)


def test_a_slow_start_does_not_dilute_the_rate_once_the_window_has_passed() -> None:
    """The old line averaged since the start: 10 idle seconds, then 10/s for 10 s, read 5/s."""
    rates = WindowRates(10.0, started=0.0)
    for tenth in range(101, 201):
        rates.add(tenth / 10, "DetectFaces", 1)
    assert rates.rate("DetectFaces", 20.0) == pytest.approx(10.0)


def test_the_first_seconds_count_only_the_seconds_observed() -> None:
    rates = WindowRates(10.0, started=100.0)
    rates.add(101.0, "DetectText", 4)
    rates.add(102.0, "DetectText", 4)
    assert rates.rate("DetectText", 102.0) == pytest.approx(4.0)  # 8 calls in 2 s, not in 10


def test_counts_leave_the_window_and_an_idle_key_reads_zero() -> None:
    rates = WindowRates(10.0, started=0.0)
    rates.add(1.0, "RecognizeCelebrities", 5)
    rates.add(6.0, "RecognizeCelebrities", 5)
    assert rates.count("RecognizeCelebrities", 10.5) == 10
    assert rates.count("RecognizeCelebrities", 11.5) == 5
    assert rates.rate("RecognizeCelebrities", 30.0) == 0.0
    assert rates.rate("DetectLabels", 30.0) == 0.0  # never seen


def test_nothing_before_the_start() -> None:
    assert WindowRates(10.0, started=5.0).rate("DetectLabels", 5.0) == 0.0
    with pytest.raises(ValueError, match="window"):
        WindowRates(0.0, started=0.0)


@given(
    st.lists(
        st.tuples(st.floats(0, 100, allow_nan=False), st.sampled_from("ab"), st.integers(-2, 50)), max_size=80
    )
)
def test_the_window_holds_exactly_the_recent_positive_counts(adds: list[tuple[float, str, int]]) -> None:
    rates = WindowRates(10.0, started=0.0)
    now = 0.0
    seen: list[tuple[float, str, int]] = []
    for at, key, n in sorted(adds):
        now = at
        rates.add(now, key, n)
        seen.append((now, key, n))
        for k in "ab":
            expected = sum(m for t, kk, m in seen if kk == k and m > 0 and t > now - 10.0)
            assert rates.count(k, now) == expected
            assert rates.rate(k, now) >= 0
