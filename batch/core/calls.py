"""How calls ended, and the counts a run keeps of them: the accounting every caller shares. Pure."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batch.core.redaction import one_line
from batch.core.retry import ERROR_OUTCOMES, Outcome
from batch.core.timeline import SecondKey, second_key

__all__ = ["THROTTLE_CODES", "Call", "CallCounts", "CallResult", "failed_locally"]

THROTTLE_CODES = frozenset(code for code, outcome in ERROR_OUTCOMES.items() if outcome is Outcome.THROTTLED)


@dataclass
class CallCounts:
    """Attempts by (operation, outcome), retries and throttles, for the run's summary. Thread-safe."""

    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: int = 0
    throttled: int = 0
    #: Seconds spent in attempts that got an answer, and how many: Little's law needs the latency.
    latency_seconds: float = 0.0
    answered: int = 0
    #: Attempts by the Unix second they ended in, operation and outcome class (`batch.core.timeline`).
    per_second: Counter[SecondKey] = field(default_factory=Counter)
    #: Unix time, for `per_second`: comparable across worker processes, unlike a monotonic clock.
    wall_clock: Callable[[], float] = field(default=time.time, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, operation: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self.attempts[(operation, outcome)] += 1
            self.per_second[second_key(self.wall_clock(), operation, outcome)] += 1
            if outcome in THROTTLE_CODES:
                self.throttled += 1
            self.latency_seconds += seconds
            self.answered += 1

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1


@dataclass(frozen=True)
class CallResult:
    """How one logical call ended, after its retries."""

    response: Mapping[str, Any] | None
    attempts: int
    error_code: str | None = None
    message: str | None = None
    outcome: Outcome | None = None
    #: The process's retry budget was spent when this call failed: the endpoint keeps failing.
    budget_exhausted: bool = False
    #: The process's calls had no answer for `rekognition.silent_abort_seconds` when this call failed.
    silent: bool = False

    @property
    def ok(self) -> bool:
        return self.response is not None


#: (boto3 method, operation, request) -> the call's result, rate limited and retried by the caller.
Call = Callable[[str, str, Mapping[str, Any]], CallResult]


def failed_locally(code: str, message: str) -> CallResult:
    """A failure found before calling (e.g. a face that cannot be cropped), shaped as a call's."""
    return CallResult(response=None, attempts=0, error_code=code, message=one_line(message))
