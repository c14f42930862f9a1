from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from batch.core.concurrency import ConcurrencyPlan, LatencyEstimate


def test_littles_law_with_headroom_split_over_the_task_slots() -> None:
    # 5 operations at 50/s, 200 ms per call: 50 in flight, 75 with headroom, over 4 task slots.
    plan = ConcurrencyPlan(total_rate=250, task_slots=4, headroom=1.5)
    assert plan.per_task(0.2) == 19


@given(st.floats(0.1, 10_000), st.integers(1, 512), st.floats(0, 30))
def test_the_plan_is_bounded_and_covers_the_rate(rate: float, slots: int, latency: float) -> None:
    plan = ConcurrencyPlan(total_rate=rate, task_slots=slots)
    per_task = plan.per_task(latency)
    assert 1 <= per_task <= plan.max_per_task
    if per_task < plan.max_per_task:
        assert per_task * slots >= rate * latency  # enough in flight to keep the quota full


def test_latency_estimate_moves_towards_observations() -> None:
    estimate = LatencyEstimate(0.3)
    for _ in range(30):
        estimate.update(total_seconds=1.0, count=10)
    assert abs(estimate.seconds - 0.1) < 0.001
    assert estimate.update(0.0, 0) == estimate.seconds
