"""How many calls to keep in flight: Little's law over the quota and the observed latency. Pure.

To keep an operation's quota full, the calls in flight must cover the rate times the time each call
takes (Little's law: L = λ W). A job that sends fewer leaves quota unused; one that sends many more only
makes threads wait in the rate limiter (and, in bytes mode, hold image bytes), so the plan is bounded.
The driver re-plans as batches report their latency, and each new batch carries the current figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ConcurrencyPlan:
    """Calls in flight per task for a cluster of `task_slots` concurrent tasks."""

    #: Calls per second the whole run may make: the sum of its operations' quotas.
    total_rate: float
    #: Concurrent tasks across the cluster (worker threads).
    task_slots: int
    #: Extra in flight beyond Little's law: covers the latency's spread and the time calls spend waiting
    #: in the rate limiter (the latency estimate counts neither).
    headroom: float = 2.0
    #: Bound per task, so memory stays flat whatever the latency does.
    max_per_task: int = 64

    def per_task(self, latency_seconds: float) -> int:
        """In-flight calls (= images, whose analyses run one after another) for each task."""
        needed = self.total_rate * max(latency_seconds, 0.0) * self.headroom
        return max(1, min(self.max_per_task, math.ceil(needed / max(self.task_slots, 1))))


@dataclass
class LatencyEstimate:
    """An exponentially weighted mean of call latency, starting from a configured guess."""

    seconds: float
    weight: float = 0.3

    def update(self, total_seconds: float, count: int) -> float:
        if count > 0:
            self.seconds += self.weight * (total_seconds / count - self.seconds)
        return self.seconds
