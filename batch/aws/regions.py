"""A rate limiter for the calls of one region of a run's several (`rekognition.regions`): the same
cluster limiter, each operation keyed by its region (`batch.core.regions.limiter_key`), so every
(region, operation) has its own bucket on the scheduler, at that region's quota."""

from __future__ import annotations

from batch.aws.rekognition import Limiter
from batch.core.regions import limiter_key

__all__ = ["RegionalLimiter"]


class RegionalLimiter:
    """`limiter`'s buckets of `region`: `acquire("DetectLabels")` takes a token of
    "DetectLabels@us-west-2" (the home region's keys are the operations' own names)."""

    def __init__(self, limiter: Limiter, region: str, home: str) -> None:
        self._limiter, self._region, self._home = limiter, region, home

    def acquire(self, operation: str) -> None:
        self._limiter.acquire(limiter_key(operation, self._region, self._home))

    def report_throttle(self, operation: str) -> None:
        self._limiter.report_throttle(limiter_key(operation, self._region, self._home))
