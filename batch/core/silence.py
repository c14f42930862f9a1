"""How long an endpoint has been silent: seconds with calls out and no answer back. Pure but for the clock.

A retry budget ends a run against an endpoint that fails fast; an endpoint that accepts connections and
never answers costs a read timeout per attempt, so the budget drains slowly (217 s with the defaults).
`SilenceWatch` bounds that time instead: a worker process gives up once its calls have had no answer
for `limit` seconds (`rekognition.silent_abort_seconds`). Any answer, an error included, proves the
endpoint alive and starts the count again.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["SilenceWatch"]


class SilenceWatch:
    """Seconds during which at least one call was out and none was answered, since the last answer.

    Only time with a call in flight counts: backoff sleeps, rate-limit waits and idle time between
    batches are not silence, and the sequential timeouts of one thread add up. Shared by the calls of
    one process; thread-safe. `limit = math.inf` never expires.
    """

    def __init__(self, limit: float = math.inf, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not limit > 0:
            raise ValueError(f"limit must be > 0, got {limit!r}")
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._silent = 0.0
        self._mark = clock()

    def sent(self) -> None:
        """An attempt went out."""
        with self._lock:
            self._advance()
            self._in_flight += 1

    def ended(self, *, answered: bool) -> None:
        """An attempt ended: `answered` if the endpoint sent a response (an error response too), not
        if it timed out or the connection failed."""
        with self._lock:
            self._advance()
            self._in_flight = max(0, self._in_flight - 1)
            if answered:
                self._silent = 0.0

    def silent_seconds(self) -> float:
        with self._lock:
            self._advance()
            return self._silent

    def expired(self) -> bool:
        """Silent for `limit` seconds or more: the endpoint is taken for dead."""
        return self.silent_seconds() >= self.limit

    def _advance(self) -> None:
        now = self._clock()
        if self._in_flight > 0:
            self._silent += now - self._mark
        self._mark = now
