"""Calls per second: Rekognition attempts counted by wall-clock second, operation and outcome. Pure.

Each worker process counts an attempt under the Unix second it ended in (`time.time()`, not a
monotonic clock, so the counts of processes on several machines line up, up to their clock skew);
the batches carry their counts back, the driver adds them up (`Counter.update`) and writes them as the
`call_seconds` table with seconds counted from the run's start. The run report draws it against the
quota as a trailing mean (`rate_series(window=...)`): one second's count is not a rate, and may exceed
the quota although the quota was kept (docs/design/rate-limiter.md, "The report's chart"). Outcomes are
grouped in three classes, so the table stays small whatever the error codes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from batch.core.retry import ERROR_OUTCOMES, Outcome

# The values of `call_seconds.outcome`.
OK = "ok"
THROTTLED = "throttled"
ERROR = "error"

#: (Unix second, operation, outcome class) -> attempts.
SecondKey = tuple[int, str, str]


def outcome_class(outcome: str) -> str:
    """`ok`, `throttled` (codes `batch.core.retry` classifies as throttling) or `error` (any other code)."""
    if outcome == OK:
        return OK
    return THROTTLED if ERROR_OUTCOMES.get(outcome) is Outcome.THROTTLED else ERROR


def second_key(wall_seconds: float, operation: str, outcome: str) -> SecondKey:
    """The timeline key of one attempt that ended at `wall_seconds` (Unix time)."""
    return math.floor(wall_seconds), operation, outcome_class(outcome)


def timeline_rows(
    timeline: Mapping[SecondKey, int],
    *,
    started_at: datetime,
    quotas: Mapping[str, float],
    common: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The `call_seconds` rows of a run: one per (second since `started_at`, operation, outcome class).

    `common` holds the columns every table has. A second may be negative when a worker's clock is
    behind the driver's.
    """
    start = math.floor(started_at.timestamp())
    return [
        {
            **common,
            "second": second - start,
            "operation": operation,
            "outcome": outcome,
            "calls": calls,
            "quota_tps": quotas.get(operation),
        }
        for (second, operation, outcome), calls in sorted(timeline.items())
    ]


@dataclass(frozen=True)
class RateSeries:
    """Calls per second of each (operation, outcome class), averaged over buckets of equal length.

    Use it to draw a run of any length with a bounded number of points: an 8-hour run has 28,800
    seconds, far more than a chart's width in pixels.
    """

    #: First second (since the run's start) of each bucket.
    starts: tuple[int, ...]
    bucket_seconds: int
    #: Per (operation, outcome class): the mean calls per second in each bucket, zero where none.
    rates: Mapping[tuple[str, str], tuple[float, ...]]
    #: Each second's rate is the mean over this many seconds ending with it (1: its own count).
    window_seconds: int = 1

    @property
    def edges(self) -> tuple[int, ...]:
        """The buckets' edges: their starts, then the end of the last one."""
        return (*self.starts, self.starts[-1] + self.bucket_seconds) if self.starts else ()

    def operations(self) -> list[str]:
        return sorted({operation for operation, _ in self.rates})

    def of(self, operation: str, outcome: str) -> tuple[float, ...]:
        return self.rates.get((operation, outcome), (0.0,) * len(self.starts))


def rate_series(
    rows: Iterable[tuple[int, str, str, int]], *, max_points: int = 600, window: int = 1
) -> RateSeries:
    """Bucket (second, operation, outcome class, calls) rows into at most `max_points` buckets, each
    second's rate being the mean over the `window` seconds ending with it.

    Buckets start at the earliest second (or 0) and cover every second up to the last one with calls,
    and `window - 1` seconds more (where the last calls still weigh in the mean: no call is lost); a
    second without calls counts as zero, and the last bucket's rate is over the seconds it covers.
    """
    rows = list(rows)
    if not rows:
        return RateSeries((), 1, {}, window)
    first = min(0, *(second for second, *_ in rows))
    span = max(second for second, *_ in rows) - first + window
    width = math.ceil(span / max_points)
    buckets = math.ceil(span / width)
    starts = tuple(first + index * width for index in range(buckets))
    per_second: dict[tuple[str, str], list[int]] = {}
    for second, operation, outcome, calls in rows:
        per_second.setdefault((operation, outcome), [0] * span)[second - first] += calls
    rates = {}
    for key, counts in per_second.items():
        means = trailing_means(counts, window)
        rates[key] = tuple(
            math.fsum(means[index * width : (index + 1) * width]) / min(width, span - index * width)
            for index in range(buckets)
        )
    return RateSeries(starts, width, rates, window)


def trailing_means(counts: Sequence[int], window: int) -> list[float]:
    """Each position's mean over the `window` positions ending with it (those before the first count
    as zero: nothing was called before the run)."""
    totals = list(itertools.accumulate(counts, initial=0))
    return [(totals[i + 1] - totals[max(0, i + 1 - window)]) / window for i in range(len(counts))]
