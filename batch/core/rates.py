"""Rates over a sliding window: counts that arrive with the time they were seen, read as counts per second
over the last few seconds. Pure: every call is given `now` (any monotonic clock)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable

__all__ = ["WindowRates"]


class WindowRates:
    """Counts per key over the last `window` seconds, as per-second rates.

    `add(now, key, n)` records `n` events of `key` seen at `now`; `rate(key, now)` is the events of the
    last `window` seconds over the seconds observed: the window, or less while fewer seconds have
    passed since `started` (so the first seconds are not diluted by time before anything could be
    seen). Memory is bounded by the adds of one window.
    """

    def __init__(self, window: float, started: float) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        self.window = window
        self.started = started
        self._events: deque[tuple[float, Hashable, int]] = deque()
        self._in_window: Counter[Hashable] = Counter()

    def add(self, now: float, key: Hashable, n: int = 1) -> None:
        if n <= 0:
            return
        self._forget(now)
        self._events.append((now, key, n))
        self._in_window[key] += n

    def count(self, key: Hashable, now: float) -> int:
        """Events of `key` in the window that ends at `now`."""
        self._forget(now)
        return self._in_window[key]

    def rate(self, key: Hashable, now: float) -> float:
        """Events of `key` per second over the window ending at `now` (0 before anything was seen)."""
        span = min(self.window, now - self.started)
        if span <= 0:
            return 0.0
        return self.count(key, now) / span

    def _forget(self, now: float) -> None:
        horizon = now - self.window
        while self._events and self._events[0][0] <= horizon:
            _, key, n = self._events.popleft()
            self._in_window[key] -= n
            if not self._in_window[key]:
                del self._in_window[key]
