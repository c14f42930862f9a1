from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.core.aimd import AdaptiveRate

ceilings = st.floats(min_value=0.5, max_value=5000, allow_nan=False)
#: A run of events: (seconds since the previous event, whether a throttle was reported).
events = st.lists(st.tuples(st.floats(min_value=0, max_value=5, allow_nan=False), st.booleans()), max_size=60)


def replay(rate: AdaptiveRate, steps: list[tuple[float, bool]]) -> list[tuple[float, float, bool]]:
    """Feed the events; return (now, current rate, whether this event cut the rate) after each."""
    now, seen = 0.0, []
    for gap, throttled in steps:
        now += gap
        cut = rate.on_throttle(now) if throttled else False
        seen.append((now, rate.current(now), cut))
    return seen


def test_starts_at_the_ceiling_and_cuts_by_beta() -> None:
    rate = AdaptiveRate(40)
    assert rate.current(0.0) == 40
    assert rate.on_throttle(10.0)
    assert rate.current(10.0) == pytest.approx(28)


def test_climbs_alpha_ceiling_per_second() -> None:
    rate = AdaptiveRate(100, beta=0.5, alpha=0.1)
    rate.on_throttle(0.0)
    assert rate.current(1.0) == pytest.approx(60)
    assert rate.current(2.0) == pytest.approx(70)
    assert rate.current(100.0) == 100


def test_burst_of_reports_cuts_once() -> None:
    rate = AdaptiveRate(100, cooldown=1.0)
    assert [rate.on_throttle(t) for t in (0.0, 0.1, 0.5, 0.99, 1.0)] == [True, False, False, False, True]
    assert rate.cuts == 2


def test_default_floor() -> None:
    assert AdaptiveRate(1000).floor == 10
    assert AdaptiveRate(20).floor == 0.5
    assert AdaptiveRate(0.3).floor == 0.3  # never above the ceiling


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ceiling": 0}, "ceiling"),
        ({"ceiling": 10, "beta": 1.0}, "beta"),
        ({"ceiling": 10, "alpha": 0}, "alpha"),
        ({"ceiling": 10, "cooldown": -1}, "cooldown"),
        ({"ceiling": 10, "floor": 0}, "floor"),
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdaptiveRate(**kwargs)


@given(ceilings, events)
def test_stays_between_floor_and_ceiling(ceiling: float, steps: list[tuple[float, bool]]) -> None:
    rate = AdaptiveRate(ceiling)
    for _, current, _ in replay(rate, steps):
        assert rate.floor <= current <= ceiling


@given(ceilings, st.floats(min_value=0, max_value=3), events)
def test_cuts_at_most_once_per_cooldown(
    ceiling: float, cooldown: float, steps: list[tuple[float, bool]]
) -> None:
    rate = AdaptiveRate(ceiling, cooldown=cooldown)
    cut_times = [now for now, _, cut in replay(rate, steps) if cut]
    assert all(b - a >= cooldown for a, b in itertools.pairwise(cut_times))


@given(ceilings, events, st.floats(min_value=0.05, max_value=1), st.floats(min_value=0.1, max_value=0.9))
def test_recovers_to_the_ceiling_after_quiet(
    ceiling: float, steps: list[tuple[float, bool]], alpha: float, beta: float
) -> None:
    rate = AdaptiveRate(ceiling, alpha=alpha, beta=beta)
    seen = replay(rate, steps)
    end = seen[-1][0] if seen else 0.0
    # From the floor, the climb takes at most 1/alpha seconds.
    assert rate.current(end + 1 / alpha + 1e-9) == pytest.approx(ceiling)


@given(ceilings, events)
def test_never_decreases_without_a_throttle(ceiling: float, steps: list[tuple[float, bool]]) -> None:
    rate = AdaptiveRate(ceiling)
    previous = ceiling
    for _, current, cut in replay(rate, steps):
        if not cut:
            assert current >= previous - 1e-9 * ceiling
        previous = current
