"""The report's calls chart on a real run's timeline: single seconds above the quota of a run that was
never throttled (calls are counted in the second they end) are drawn as a mean over the page's window,
which stays at the quota, and the chart says what it draws."""

from __future__ import annotations

from batch.core.timeline import ERROR, OK, THROTTLED, rate_series
from batch.report.charts import calls_chart, rendering
from batch.report.page import RATE_WINDOW_SECONDS

QUOTA = 5.0
#: `call_seconds` of a real run: 99 demo images (the demo set three times) on the local stack, endpoint
#: and job at 5 calls/s per operation, configs/local.toml (2 workers); no call was throttled.
#: (second, ok calls) per operation; each operation also had one InvalidImageFormatException.
REAL_OK = {
    "DetectFaces": [4, 5, 4, 5, 5, 4, 5, 5, 5, 5, 4, 5, 5, 5, 5, 4, 2, 1],
    "DetectLabels": [4, 4, 5, 5, 4, 5, 5, 4, 5, 5, 4, 5, 5, 5, 4, 5, 3, 1],
    "DetectModerationLabels": [4, 5, 5, 5, 5, 4, 5, 5, 4, 5, 4, 6, 4, 5, 4, 5, 3],
    "DetectText": [4, 5, 5, 5, 4, 5, 5, 4, 4, 5, 4, 5, 5, 5, 5, 5, 3],
    "RecognizeCelebrities": [3, 6, 4, 6, 5, 3, 5, 5, 5, 5, 4, 5, 5, 4, 4, 5, 3, 1],
}
FIRST_SECOND = 4
REAL_ERRORS = [(9, "DetectFaces"), (5, "DetectLabels"), (14, "DetectText")]


def real_timeline() -> list[tuple[int, str, str, int]]:
    rows = [
        (FIRST_SECOND + index, operation, OK, calls)
        for operation, counts in REAL_OK.items()
        for index, calls in enumerate(counts)
    ]
    return rows + [(second, operation, ERROR, 1) for second, operation in REAL_ERRORS]


def test_single_seconds_of_the_real_run_stood_above_the_quota_without_a_throttle() -> None:
    per_second = rate_series(real_timeline())
    assert max(max(per_second.of(op, OK)) for op in REAL_OK) > QUOTA
    assert not any(any(per_second.of(op, THROTTLED)) for op in REAL_OK)


def test_the_chart_draws_means_over_the_window_which_stay_at_the_quota() -> None:
    series = rate_series(real_timeline(), window=RATE_WINDOW_SECONDS)
    assert series.window_seconds == RATE_WINDOW_SECONDS
    for operation, counts in REAL_OK.items():
        drawn = series.of(operation, OK)
        assert max(drawn) <= QUOTA
        # Every call is still there: the means, over the seconds they cover, add up to the calls.
        assert abs(sum(drawn) * series.bucket_seconds - sum(counts)) < 1e-9


def test_the_chart_says_what_its_bars_are() -> None:
    series = rate_series(real_timeline(), window=RATE_WINDOW_SECONDS)
    with rendering():
        chart = calls_chart(series, dict.fromkeys(REAL_OK, QUOTA))
    svg = chart.svg.decode()
    assert (
        chart.title
        == f"Calls per second by operation (means over {RATE_WINDOW_SECONDS} s), against the quota"
    )
    assert f"(mean over {RATE_WINDOW_SECONDS} s)" in svg
    assert "(calls counted in the second they ended; only throttles say the quota was exceeded)" in svg
