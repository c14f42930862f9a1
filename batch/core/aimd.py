"""Adaptive rate: additive increase, multiplicative decrease (AIMD) of one operation's call rate. Pure.

`AdaptiveRate` is one rate shared by every caller of an operation (the cluster limiter in
`batch.aws.ratelimit` keeps one per operation on the Dask scheduler). A throttle cuts it to `beta` times
itself, at most once per `cooldown` (throttles arrive in bursts: one overload, one cut); it then climbs
back by `alpha * ceiling` per second, reaching the configured quota within ``(1 - beta) / alpha`` seconds.
AIMD lets independent senders converge to a fair, stable share of one capacity (TCP; Chiu & Jain 1989).
For one process alone, botocore's ``retries={"mode": "adaptive"}`` does the same per client
(`botocore/retries/adaptive.py`), but N processes back off and climb back each on their own. Retrying
the throttled calls is `batch.core.retry`'s job; this only sets how fast new calls start.
"""

from __future__ import annotations

import math

__all__ = ["AdaptiveRate"]


class AdaptiveRate:
    """One operation's current allowed rate (calls/s) under AIMD, between `floor` and `ceiling`.

    - `on_throttle(now)`: the rate becomes ``max(floor, beta * current(now))``, unless the last cut was
      less than `cooldown` seconds ago (then nothing happens: the same overload is being reported).
    - `current(now)`: the rate after the last cut plus ``alpha * ceiling`` per second since, capped at
      `ceiling`.

    `floor` defaults to 1 % of the ceiling but at least 0.5/s (and never above the ceiling), so a run
    that keeps being throttled still makes progress and still probes for room.

    Not thread-safe: the scheduler calls it from its event loop only.
    """

    def __init__(
        self,
        ceiling: float,
        *,
        beta: float = 0.7,
        alpha: float = 0.1,
        cooldown: float = 1.0,
        floor: float | None = None,
    ) -> None:
        if not (ceiling > 0 and math.isfinite(ceiling)):
            raise ValueError(f"ceiling must be a finite number > 0, got {ceiling!r}")
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1), got {beta!r}")
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        if cooldown < 0:
            raise ValueError(f"cooldown must be >= 0, got {cooldown!r}")
        self.ceiling = float(ceiling)
        self.floor = min(self.ceiling, max(0.5, 0.01 * self.ceiling) if floor is None else float(floor))
        if self.floor <= 0:
            raise ValueError(f"floor must be > 0, got {floor!r}")
        self.beta = beta
        self.alpha = alpha
        self.cooldown = cooldown
        self._base = self.ceiling
        self._cut_at: float | None = None
        self.cuts = 0

    def current(self, now: float) -> float:
        """The allowed rate at `now`: the last cut plus the linear climb since, at most the ceiling."""
        if self._cut_at is None:
            return self._base
        elapsed = max(0.0, now - self._cut_at)  # a clock stepping back must not lower the rate
        return min(self.ceiling, self._base + self.alpha * self.ceiling * elapsed)

    def on_throttle(self, now: float) -> bool:
        """A call was throttled: cut the rate, once per `cooldown`. Returns whether it was cut."""
        if self._cut_at is not None and now - self._cut_at < self.cooldown:
            return False
        self._base = max(self.floor, self.beta * self.current(now))
        self._cut_at = now
        self.cuts += 1
        return True
