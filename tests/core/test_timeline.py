"""batch.core.timeline: attempts per wall-clock second, merged across processes, bucketed for the chart."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from batch.aws.rekognition import CallCounts
from batch.core.tables import CALL_SECONDS_SCHEMA, rows_to_table
from batch.core.timeline import ERROR, OK, THROTTLED, outcome_class, rate_series, timeline_rows

OPERATIONS = ("DetectFaces", "DetectLabels")
OUTCOMES = ("ok", "ThrottlingException", "ProvisionedThroughputExceededException", "InternalServerError")
START = 1_790_000_000.0  # a Unix time

#: One attempt: (seconds after START it ended, operation, outcome as CallCounts records it).
attempts = st.lists(
    st.tuples(st.floats(0, 3600, allow_nan=False), st.sampled_from(OPERATIONS), st.sampled_from(OUTCOMES)),
    max_size=60,
)


def counted(recorded: list[tuple[float, str, str]]) -> CallCounts:
    """A CallCounts that saw `recorded`, its wall clock reading each attempt's end in turn."""
    ends = iter([START + at for at, _, _ in recorded])
    counts = CallCounts(wall_clock=lambda: next(ends))
    for _, operation, outcome in recorded:
        counts.record(operation, outcome, 0.1)
    return counts


def test_outcomes_fall_in_three_classes() -> None:
    assert outcome_class("ok") == OK
    assert outcome_class("ThrottlingException") == THROTTLED
    assert outcome_class("ProvisionedThroughputExceededException") == THROTTLED
    assert outcome_class("InvalidImageFormatException") == ERROR
    assert outcome_class("ReadTimeoutError") == ERROR


def test_call_counts_count_each_attempt_under_the_second_it_ended() -> None:
    counts = counted(
        [
            (0.2, "DetectFaces", "ok"),
            (0.9, "DetectFaces", "ok"),
            (1.0, "DetectFaces", "ok"),
            (1.5, "DetectFaces", "ThrottlingException"),
        ]
    )
    second = int(START)
    assert counts.per_second == {
        (second, "DetectFaces", OK): 2,
        (second + 1, "DetectFaces", OK): 1,
        (second + 1, "DetectFaces", THROTTLED): 1,
    }
    assert counts.throttled == 1  # the same throttles as the summary counts


@given(attempts, st.integers(1, 4), st.randoms(use_true_random=False))
def test_processes_merged_in_any_order_give_one_timeline(
    recorded: list[tuple[float, str, str]], processes: int, random: object
) -> None:
    """The driver adds up the batches' timelines: the result does not depend on which process made
    which attempt, nor on the order the batches come back in."""
    shares = [recorded[index::processes] for index in range(processes)]
    batches = [dict(counted(share).per_second) for share in shares]
    random.shuffle(batches)  # type: ignore[attr-defined]
    merged: Counter[tuple[int, str, str]] = Counter()
    for batch in batches:
        merged.update(batch)
    assert merged == counted(recorded).per_second
    assert sum(merged.values()) == len(recorded)


def test_rows_count_seconds_from_the_run_start_and_fit_the_schema() -> None:
    started = datetime.fromtimestamp(START + 0.7, UTC)
    timeline = {(int(START) + 5, "DetectFaces", OK): 3, (int(START), "DetectLabels", THROTTLED): 1}
    common = {"run_id": "r1", "bucket": "b", "key": "photos/", "etag": None}
    rows = timeline_rows(timeline, started_at=started, quotas={"DetectFaces": 5.0}, common=common)
    assert [(r["second"], r["operation"], r["outcome"], r["calls"], r["quota_tps"]) for r in rows] == [
        (0, "DetectLabels", THROTTLED, 1, None),
        (5, "DetectFaces", OK, 3, 5.0),
    ]
    assert rows_to_table(rows, CALL_SECONDS_SCHEMA).num_rows == 2


rows_strategy = st.lists(
    st.tuples(
        st.integers(-5, 5000),
        st.sampled_from(OPERATIONS),
        st.sampled_from((OK, THROTTLED, ERROR)),
        st.integers(1, 50),
    ),
    max_size=40,
)


@given(rows_strategy, st.integers(1, 700))
def test_rate_series_keeps_every_call_in_at_most_max_points(
    rows: list[tuple[int, str, str, int]], max_points: int
) -> None:
    series = rate_series(rows, max_points=max_points)
    assert len(series.starts) <= max_points
    assert len(series.edges) == len(series.starts) + (1 if series.starts else 0)
    covered = [b - a for a, b in itertools.pairwise(series.edges)]
    last = max((second for second, *_ in rows), default=0)
    for (operation, outcome), rates in series.rates.items():
        expected = sum(n for _, op, oc, n in rows if (op, oc) == (operation, outcome))
        # The last bucket's rate is over the seconds it covers, which may be fewer than its width.
        seconds = [min(width, last + 1 - start) for width, start in zip(covered, series.starts, strict=True)]
        assert abs(sum(r * s for r, s in zip(rates, seconds, strict=True)) - expected) < 1e-6 * max(
            1, expected
        )


def test_rate_series_is_exact_per_second_for_short_runs_and_fills_quiet_seconds() -> None:
    series = rate_series([(0, "DetectFaces", OK, 4), (3, "DetectFaces", OK, 2)])
    assert series.bucket_seconds == 1
    assert series.starts == (0, 1, 2, 3)
    assert series.of("DetectFaces", OK) == (4.0, 0.0, 0.0, 2.0)
    assert series.of("DetectFaces", THROTTLED) == (0.0, 0.0, 0.0, 0.0)
    assert rate_series([]).starts == ()


@given(rows_strategy, st.integers(1, 700), st.integers(1, 30))
def test_a_windowed_series_keeps_every_call_and_never_exceeds_the_busiest_window(
    rows: list[tuple[int, str, str, int]], max_points: int, window: int
) -> None:
    series = rate_series(rows, max_points=max_points, window=window)
    assert len(series.starts) <= max_points
    end = max((second for second, *_ in rows), default=0) + window  # the last calls weigh in until then
    for (operation, outcome), rates in series.rates.items():
        mine = [(s, n) for s, op, oc, n in rows if (op, oc) == (operation, outcome)]
        covered = [min(series.bucket_seconds, end - start) for start in series.starts]
        assert abs(
            sum(r * c for r, c in zip(rates, covered, strict=True)) - sum(n for _, n in mine)
        ) < 1e-6 * max(1, sum(n for _, n in mine))
        busiest = max(sum(n for s, n in mine if t - window < s <= t) for t, _ in mine)
        assert max(rates) <= busiest / window + 1e-9


def test_trailing_means_count_the_seconds_before_the_run_as_zero() -> None:
    from batch.core.timeline import trailing_means

    assert trailing_means([6, 4, 5, 0], 2) == [3.0, 5.0, 4.5, 2.5]
    assert trailing_means([6, 4], 1) == [6.0, 4.0]
