"""The silence watch: seconds with a call out and no answer, against a model that integrates over time."""

from __future__ import annotations

import math

import pytest
from fakes import FakeClock
from hypothesis import given
from hypothesis import strategies as st

from batch.core.silence import SilenceWatch

#: One step: wait this long, then send, end with an answer, or end without one.
steps = st.lists(
    st.tuples(st.floats(0, 40, allow_nan=False), st.sampled_from(["send", "answered", "timed out"])),
    max_size=60,
)


def model_silence(events: list[tuple[float, str]], now: float) -> float:
    """The measure of the instants since the last answer at which at least one call was in flight."""
    last_answer = max((t for t, what in events if what == "answered"), default=-math.inf)
    silent, in_flight, previous = 0.0, 0, 0.0
    for t, what in [*events, (now, "now")]:
        if in_flight > 0:
            silent += max(0.0, t - max(previous, last_answer))
        previous = t
        if what == "send":
            in_flight += 1
        elif what in ("answered", "timed out"):
            in_flight -= 1
    return silent


@given(steps)
def test_silence_is_the_time_with_calls_out_since_the_last_answer(script: list[tuple[float, str]]) -> None:
    clock = FakeClock()
    watch = SilenceWatch(clock=clock)
    events: list[tuple[float, str]] = []
    in_flight = 0
    for wait, what in script:
        clock.sleep(wait)
        if what == "send":
            watch.sent()
            in_flight += 1
        elif in_flight:  # an end needs a call out
            watch.ended(answered=what == "answered")
            in_flight -= 1
        else:
            continue
        events.append((clock.now, what))
        assert watch.silent_seconds() == pytest.approx(model_silence(events, clock.now), abs=1e-6)
    clock.sleep(5)
    assert watch.silent_seconds() == pytest.approx(model_silence(events, clock.now), abs=1e-6)


def test_a_thread_whose_attempts_all_time_out_adds_them_up_across_its_backoff() -> None:
    """One thread, read timeout 30 s, 2 s of backoff: the second timeout ends 60 s of silence."""
    clock = FakeClock()
    watch = SilenceWatch(45, clock=clock)
    watch.sent()
    clock.sleep(30)
    watch.ended(answered=False)
    clock.sleep(2)  # backoff: nothing out, not silence
    watch.sent()
    clock.sleep(14.9)
    assert not watch.expired()
    clock.sleep(0.1)
    assert watch.expired()
    assert watch.silent_seconds() == pytest.approx(45)


def test_any_answer_an_error_too_starts_the_count_again_and_idle_time_is_not_silence() -> None:
    clock = FakeClock()
    watch = SilenceWatch(45, clock=clock)
    watch.sent()
    watch.sent()
    clock.sleep(40)
    watch.ended(answered=True)  # e.g. a 500: the endpoint is alive
    assert watch.silent_seconds() == 0
    clock.sleep(10)
    watch.ended(answered=False)
    clock.sleep(3600)  # between batches
    assert watch.silent_seconds() == pytest.approx(10)


def test_the_limit_must_be_positive_and_infinity_never_expires() -> None:
    with pytest.raises(ValueError, match="limit"):
        SilenceWatch(0)
    clock = FakeClock()
    watch = SilenceWatch(clock=clock)
    watch.sent()
    clock.sleep(1e9)
    assert not watch.expired()
