"""A token bucket: the quota arithmetic shared by the local endpoint and the batch job's client-side limiter.

Pure: no I/O, the clock and the sleeper are injected, so it is tested without sleeping.

Guarantee: the bucket holds at most `burst` tokens and gains `rate` tokens per second, starting full. Hence
in ANY window of T seconds at most ``burst + rate * T`` acquisitions of one token succeed.

Use it to cap the rate of one process (or one operation of the endpoint). It is not a distributed
limiter: several processes each holding a bucket of rate R together allow N*R.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]

#: Token counts within this of a whole token count as whole: after sleeping exactly `wait_time`, float
#: rounding can leave 0.9999999 tokens, and a caller would then wait ~1e-16 s over and over.
_EPSILON = 1e-9


class TokenBucket:
    """`rate` tokens per second, capacity `burst`, starts full; thread-safe."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def _refill(self) -> float:
        """Bring the token count up to now; return now. Caller holds the lock."""
        now = self._clock()
        # A clock that steps backwards (only possible with a fake clock) must not mint tokens.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = max(self._updated, now)
        return now

    def try_acquire(self, n: float = 1.0) -> bool:
        """Take `n` tokens if they are there now; never waits."""
        with self._lock:
            self._refill()
            if self._tokens >= n - _EPSILON:
                self._tokens = max(0.0, self._tokens - n)
                return True
            return False

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until `n` tokens would be available (0.0 if now); `inf` if never (rate 0 or n > burst)."""
        with self._lock:
            self._refill()
            missing = n - self._tokens
            if missing <= _EPSILON:
                return 0.0
            if self._rate == 0 or n > self._burst:
                return math.inf
            return missing / self._rate

    def acquire(self, n: float = 1.0, sleep: Callable[[float], object] = time.sleep) -> None:
        """Block (through `sleep`) until `n` tokens are taken. Raises ValueError if that can never happen."""
        while not self.try_acquire(n):
            delay = self.wait_time(n)
            if math.isinf(delay):
                raise ValueError(f"cannot acquire {n} tokens: rate={self._rate}, burst={self._burst}")
            sleep(delay)

    def set_rate(self, rate: float) -> None:
        """Change the refill rate from now on (tokens earned so far are kept)."""
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
        with self._lock:
            self._refill()
            self._rate = float(rate)
