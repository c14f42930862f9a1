"""How calls ended, and the counts a run keeps of them: the accounting every caller shares. Pure."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from batch.core.redaction import one_line
from batch.core.retry import ERROR_OUTCOMES, Outcome
from batch.core.timeline import SecondKey, second_key

__all__ = [
    "IN_FLIGHT",
    "PAID_OUTCOMES",
    "THROTTLE_CODES",
    "Call",
    "CallCounts",
    "CallJournal",
    "CallResult",
    "ImageCalls",
    "failed_locally",
    "paid_calls",
    "request_digest",
    "throttled_calls",
]

THROTTLE_CODES = frozenset(code for code, outcome in ERROR_OUTCOMES.items() if outcome is Outcome.THROTTLED)

#: The outcome of a call sent by a process that died before it read the answer. Rekognition bills it if
#: it answered with success, which no one can know any more: the bill counts it as paid.
IN_FLIGHT = "in-flight"
#: The outcomes a bill counts: calls answered with success, and calls whose answer a crash lost.
PAID_OUTCOMES = ("ok", IN_FLIGHT)


def paid_calls(calls: Mapping[tuple[str, str], int], operation: str) -> int:
    """Calls of `operation` among `calls` ((operation, outcome) -> count) that the bill counts."""
    return sum(calls.get((operation, outcome), 0) for outcome in PAID_OUTCOMES)


def throttled_calls(calls: Iterable[tuple[tuple[str, str], int]]) -> int:
    """Attempts answered with throttling among ((operation, outcome), count) pairs."""
    return sum(n for (_, outcome), n in calls if outcome in THROTTLE_CODES)


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


class CallJournal(Protocol):
    """One image's calls, told by the caller: `cached` gives an answer an earlier try of the image got to
    the same request (the call is then not made); `sending` comes before each attempt leaves (where a
    durable record of it is written); `answered` with the outcome, and a success's answer, once read."""

    def cached(self, operation: str, digest: str) -> Mapping[str, Any] | None: ...

    def sending(self, operation: str, *, retry: bool) -> None: ...

    def answered(
        self, operation: str, outcome: str, digest: str = "", response: Mapping[str, Any] | None = None
    ) -> None: ...


def request_digest(operation: str, request: Mapping[str, Any]) -> str:
    """A digest of one call (its operation and request, image bytes included): the key of its answer."""
    digest = hashlib.blake2b(operation.encode(), digest_size=16)
    _feed(digest, request)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Each value with its type and length: no two requests feed the same bytes."""
    if isinstance(value, str):
        value = value.encode()
        digest.update(b"s%d:" % len(value))
    if isinstance(value, bytes):
        digest.update(b"b%d:" % len(value))
        digest.update(value)
    elif isinstance(value, Mapping):
        digest.update(b"d%d:" % len(value))
        for key in sorted(value):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(b"l%d:" % len(value))
        for item in value:
            _feed(digest, item)
    else:  # numbers, booleans, None
        digest.update(f"v{value!r};".encode())


@dataclass
class ImageCalls:
    """The attempts of one image's calls in one try of it: by (operation, outcome), retries, and those
    sent whose answer is not in yet. One image's calls are made one after the other, by one thread."""

    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    def sending(self, operation: str, *, retry: bool) -> None:
        self.in_flight[operation] += 1
        self.retries += retry

    def answered(self, operation: str, outcome: str) -> None:
        self.in_flight[operation] -= 1
        self.attempts[(operation, outcome)] += 1

    def counts(self) -> Counter[tuple[str, str]]:
        """The attempts by (operation, outcome), those still in flight as outcome `IN_FLIGHT`."""
        return self.attempts + Counter({(op, IN_FLIGHT): n for op, n in self.in_flight.items()})


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
