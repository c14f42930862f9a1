"""Which Rekognition errors to retry, and how: one table and one tenacity policy.

The classification follows the Developer Guide's "Error handling" page
(https://docs.aws.amazon.com/rekognition/latest/dg/error-handling.html) and botocore's own lists
(`botocore/retries/standard.py`): THROTTLED and TRANSIENT (5xx, timeouts, dropped connections) are
retried after a backoff; FINAL (a bad request or image) is not, since it would fail again and spend
quota; FATAL (no permission to call Rekognition at all) stops the run. Only one layer retries: the
Rekognition client is built with botocore's retries off (`total_max_attempts=1`), so attempts don't
multiply.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from batch.core.silence import SilenceWatch


class Outcome(enum.Enum):
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    FINAL = "final"
    FATAL = "fatal"

    @property
    def retryable(self) -> bool:
        return self in (Outcome.THROTTLED, Outcome.TRANSIENT)


#: Every error the Rekognition model lists for the image operations, and a few generic AWS ones.
ERROR_OUTCOMES: dict[str, Outcome] = {
    "ProvisionedThroughputExceededException": Outcome.THROTTLED,
    "ThrottlingException": Outcome.THROTTLED,
    "Throttling": Outcome.THROTTLED,
    "TooManyRequestsException": Outcome.THROTTLED,
    "InternalServerError": Outcome.TRANSIENT,
    "ServiceUnavailable": Outcome.TRANSIENT,
    "ServiceUnavailableException": Outcome.TRANSIENT,
    "RequestTimeout": Outcome.TRANSIENT,
    "RequestTimeoutException": Outcome.TRANSIENT,
    "InvalidImageFormatException": Outcome.FINAL,
    "ImageTooLargeException": Outcome.FINAL,
    "InvalidS3ObjectException": Outcome.FINAL,
    "InvalidParameterException": Outcome.FINAL,
    "ResourceNotFoundException": Outcome.FINAL,
    "ResourceNotReadyException": Outcome.FINAL,
    "HumanLoopQuotaExceededException": Outcome.FINAL,
    "ServiceQuotaExceededException": Outcome.FINAL,
    # For Rekognition this is a limit on concurrent jobs, not a rate: botocore's standard mode retries
    # it, but waiting seconds will not free a job slot.
    "LimitExceededException": Outcome.FINAL,
    "AccessDeniedException": Outcome.FATAL,
    "UnrecognizedClientException": Outcome.FATAL,
    "InvalidSignatureException": Outcome.FATAL,
    "ExpiredTokenException": Outcome.FATAL,
}

#: Codes that say the *image* is unusable, whatever the operation: once one analysis gets one of these,
#: the image's other analyses are not called (they would fail the same way).
IMAGE_ERRORS = frozenset(
    {
        "InvalidImageFormatException",
        "ImageTooLargeException",
        "InvalidS3ObjectException",
        "InvalidParameterException",
    }
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, else the exception's class name (e.g. ReadTimeoutError)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def classify(exc: BaseException) -> Outcome:
    """The outcome of one failed call. Unknown 5xx codes are transient, unknown 4xx codes final."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in ERROR_OUTCOMES:
            return ERROR_OUTCOMES[code]
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status == 429:
            return Outcome.THROTTLED
        return Outcome.TRANSIENT if status >= 500 else Outcome.FINAL
    # Dropped connections, read and connect timeouts, endpoint unreachable (botocore wraps urllib3's).
    if isinstance(exc, ConnectionError | HTTPClientError):
        return Outcome.TRANSIENT
    return Outcome.FINAL


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter, for throttling and transient errors only.

    Full jitter (`wait_random_exponential`) rather than plain exponential backoff: many threads on
    many workers hit the same quota, and un-jittered retries arrive together again (AWS Architecture
    Blog, "Exponential Backoff and Jitter"). `max_seconds` bounds the time one call may spend retrying,
    so a dead endpoint ends the call with an error instead of hanging the run.
    """

    max_attempts: int = 6
    max_seconds: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 20.0

    def retrying(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[BaseException], None] | None = None,
        budget: RetryBudget | None = None,
        silence: SilenceWatch | None = None,
    ) -> Retrying:
        """A tenacity `Retrying` for one call. `sleep` is injectable for tests; `on_retry` counts retries;
        a transient error is retried only while `budget` (shared by the process's calls) allows, and
        never once `silence` has expired (the endpoint answered nothing for its limit)."""

        def should_retry(exc: BaseException) -> bool:
            outcome = classify(exc)
            if outcome is Outcome.TRANSIENT and silence is not None and silence.expired():
                return False
            if outcome is Outcome.TRANSIENT and budget is not None:
                return budget.withdraw()
            return outcome.retryable

        def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None:
                exc = state.outcome.exception()
                if exc is not None:
                    on_retry(exc)

        return Retrying(
            retry=retry_if_exception(should_retry),
            wait=wait_random_exponential(multiplier=self.backoff_base, max=self.backoff_max),
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.max_seconds),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


class RetryBudget:
    """Retries of transient errors allowed as a share of calls, for all the calls of one process.

    Every call deposits `ratio` tokens, every retry of a transient error withdraws one, and the balance
    is capped at `capacity` (and starts there). Occasional errors are paid for; against a dead endpoint
    the balance runs out after about `capacity` retries and calls fail at once, so the run ends with a
    reason instead of retrying every call for minutes. Finagle's RetryBudget and botocore's per-client
    retry quota (`botocore/retries/quota.py`), here per process. Throttling does not draw on it: the
    rate limiter slows down for that (`batch.core.aimd`). Thread-safe.
    """

    def __init__(self, ratio: float = 0.1, capacity: float = 20.0) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError(f"ratio must be in [0, 1], got {ratio!r}")
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity!r}")
        self.ratio = ratio
        self.capacity = capacity
        self._balance = capacity
        self._lock = threading.Lock()

    def deposit(self) -> None:
        """A call was made (its first attempt)."""
        with self._lock:
            self._balance = min(self.capacity, self._balance + self.ratio)

    def withdraw(self) -> bool:
        """May a transient error be retried? Takes one token if so."""
        with self._lock:
            if self._balance >= 1:
                self._balance -= 1
                return True
            return False

    @property
    def exhausted(self) -> bool:
        """No retry is allowed now."""
        with self._lock:
            return self._balance < 1
