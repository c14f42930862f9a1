"""Calls per second: Rekognition attempts counted by wall-clock second, operation and outcome. Pure.

Each worker process counts an attempt under the Unix second it ended in (`time.time()`, not a
monotonic clock, so the counts of processes on several machines line up, up to their clock skew);
the batches carry their counts back, the driver adds them up (`Counter.update`) and writes them as the
`call_seconds` table with seconds counted from the run's start. The run report draws it against the
quota. Outcomes are grouped in three classes, so the table stays small whatever the error codes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
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

    @property
    def edges(self) -> tuple[int, ...]:
        """The buckets' edges: their starts, then the end of the last one."""
        return (*self.starts, self.starts[-1] + self.bucket_seconds) if self.starts else ()

    def operations(self) -> list[str]:
        return sorted({operation for operation, _ in self.rates})

    def of(self, operation: str, outcome: str) -> tuple[float, ...]:
        return self.rates.get((operation, outcome), (0.0,) * len(self.starts))


def rate_series(rows: Iterable[tuple[int, str, str, int]], *, max_points: int = 600) -> RateSeries:
    """Bucket (second, operation, outcome class, calls) rows into at most `max_points` buckets.

    Buckets start at the earliest second (or 0) and cover every second up to the last one with calls;
    a second without calls counts as zero, and the last bucket's rate is over the seconds it covers.
    """
    rows = list(rows)
    if not rows:
        return RateSeries((), 1, {})
    first = min(0, *(second for second, *_ in rows))
    span = max(second for second, *_ in rows) - first + 1
    width = math.ceil(span / max_points)
    buckets = math.ceil(span / width)
    starts = tuple(first + index * width for index in range(buckets))
    totals: dict[tuple[str, str], list[int]] = {}
    for second, operation, outcome, calls in rows:
        totals.setdefault((operation, outcome), [0] * buckets)[(second - first) // width] += calls
    covered = [min(width, span - index * width) for index in range(buckets)]
    rates = {
        key: tuple(calls / seconds for calls, seconds in zip(counts, covered, strict=True))
        for key, counts in totals.items()
    }
    return RateSeries(starts, width, rates)
