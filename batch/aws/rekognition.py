"""The job's only door to Rekognition: a client per process, a rate limit, and one retry layer.

The client comes from boto3, so its endpoint comes from botocore's lookup (`AWS_ENDPOINT_URL_REKOGNITION`,
`AWS_ENDPOINT_URL`, the profile). botocore's own retries are off (`total_max_attempts=1`): tenacity
owns them (see `batch.core.retry`), so a throttled call is retried by exactly one layer and every HTTP
attempt passes the rate limiter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from batch.config.model import RekognitionConfig, RunConfig
from batch.core.calls import CallCounts, CallJournal, CallResult, request_digest
from batch.core.quota import TokenBucket
from batch.core.redaction import one_line
from batch.core.retry import Outcome, RetryBudget, RetryPolicy, classify, error_code
from batch.core.silence import SilenceWatch


def rekognition_client(config: RekognitionConfig, max_pool_connections: int, session: Any = None) -> Any:
    """A boto3 Rekognition client with botocore's retries off and explicit timeouts, made from the boto3
    `session` (a new one if None).

    `max_pool_connections` must be at least the number of threads sharing the client, or threads
    queue for a connection (botocore's default pool is 10).
    """
    botocore_config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_pool_connections=max_pool_connections,
    )
    session = session or boto3.session.Session()
    return session.client("rekognition", region_name=config.region or None, config=botocore_config)


class LimiterUnavailable(Exception):
    """The rate limiter could not be asked (on a cluster: the scheduler is unreachable, or this worker is
    closing). Not an outcome of the image's call: it propagates out of `RekognitionCaller.call`, so the
    task fails and no image is recorded `failed` for it (e.g. while the run shuts down)."""


class JournalFailed(Exception):
    """The journal could not keep an attempt before it left (the image's record not written, e.g. the
    output is full): the attempt is not sent, and `error` propagates out of `RekognitionCaller.call` as
    raised (an `OutputUnwritable` stops the run, exit 3), never as an outcome of the image's call."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Limiter(Protocol):
    """What the caller needs of a rate limiter: `batch.aws.ratelimit.ClusterRateLimiter` on a cluster."""

    def acquire(self, operation: str) -> None: ...

    def report_throttle(self, operation: str) -> None: ...


class RateLimiter:
    """One token bucket per operation, for the calls of one process only.

    For a single process outside Dask (and tests). A cluster uses `batch.aws.ratelimit.ClusterRateLimiter`:
    per-process buckets multiply the quota by the number of processes.
    """

    def __init__(
        self,
        rate: float,
        *,
        rates: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate = rate
        #: Operation -> its own rate; the others get `rate`.
        self._rates = dict(rates or {})
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def acquire(self, operation: str) -> None:
        with self._lock:
            bucket = self._buckets.get(operation)
            if bucket is None:
                # A burst of one call: the quota's own bucket absorbs little, so send calls evenly.
                rate = self._rates.get(operation, self._rate)
                bucket = self._buckets[operation] = TokenBucket(rate, 1.0, clock=self._clock)
        bucket.acquire(1.0, sleep=self._sleep)

    def report_throttle(self, operation: str) -> None:
        """A fixed rate: nothing to adapt."""


class RekognitionCaller:
    """Makes one logical Rekognition call: rate limit, attempt, classify, back off, retry."""

    def __init__(
        self,
        client: Any,
        policy: RetryPolicy,
        limiter: Limiter,
        counts: CallCounts,
        *,
        budget: RetryBudget | None = None,
        silence: SilenceWatch | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._budget = budget
        self._silence = silence or SilenceWatch()
        self._clock = clock
        self._limiter = limiter
        self._counts = counts
        # One Retrying for all calls and threads (its per-call state is thread-local, as for tenacity's
        # decorator): building one per call cost CPU and left a cycle of objects for the collector.
        self._retrying = policy.retrying(
            sleep=sleep, on_retry=lambda _exc: counts.record_retry(), budget=budget, silence=self._silence
        )

    def call(
        self, method: str, operation: str, request: Mapping[str, Any], *, journal: CallJournal | None = None
    ) -> CallResult:
        """One logical call, its attempts told to `journal` (an image's record) when one is given; with
        an answer the journal has from an earlier try of the image, no call at all."""
        digest = request_digest(operation, request) if journal is not None else ""
        if journal is not None and (answer := journal.cached(operation, digest)) is not None:
            return CallResult(dict(answer), 0)
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            self._acquire(operation)
            if journal is not None:
                try:
                    journal.sending(operation, retry=attempts > 1)
                except Exception as exc:
                    raise JournalFailed(exc) from exc
            started = self._clock()
            self._silence.sent()
            try:
                response = getattr(self._client, method)(**request)
            except Exception as exc:
                self._silence.ended(answered=isinstance(exc, ClientError))
                code = error_code(exc)
                self._counts.record(operation, code, self._clock() - started)
                if journal is not None:
                    journal.answered(operation, code)
                if classify(exc) is Outcome.THROTTLED:
                    # The account said no despite the limiter (another job shares it): slow down.
                    self._limiter.report_throttle(operation)
                raise
            self._silence.ended(answered=True)
            self._counts.record(operation, "ok", self._clock() - started)
            response = {k: v for k, v in response.items() if k != "ResponseMetadata"}
            if journal is not None:
                journal.answered(operation, "ok", digest, response)
            return response

        if self._budget is not None:
            self._budget.deposit()
        try:
            response = self._retrying(attempt)
        except LimiterUnavailable:
            raise
        except JournalFailed as failed:  # not the call's outcome: the attempt was never sent
            raise failed.error from None
        except Exception as exc:
            outcome = classify(exc)
            transient = outcome is Outcome.TRANSIENT
            spent = transient and self._budget is not None and self._budget.exhausted
            silent = transient and self._silence.expired()
            return CallResult(None, attempts, error_code(exc), one_line(str(exc)), outcome, spent, silent)
        return CallResult(response, attempts)

    def _acquire(self, operation: str) -> None:
        try:
            self._limiter.acquire(operation)
        except Exception as exc:
            raise LimiterUnavailable(f"rate limiter unavailable: {type(exc).__name__}: {exc}") from exc

    def pages(self, method: str, operation: str, request: Mapping[str, Any]) -> Iterator[CallResult]:
        """Each page of a paginated operation (`NextToken`, e.g. ListFaces), each one a `call`; ends
        after the last page or after the first page that failed (check `ok`)."""
        while True:
            page = self.call(method, operation, request)
            yield page
            token = page.response.get("NextToken") if page.response is not None else None
            if not token:
                return
            request = {**request, "NextToken": token}


def driver_caller(
    config: RunConfig, analysis: str, counts: CallCounts, quotas: Mapping[str, float] | None = None
) -> RekognitionCaller:
    """A caller for the few calls one process makes outside the batches (the driver's collection sync
    and reference faces, a `rekbatch collection` command): each operation at its quota in `quotas` (as
    the run resolved them), else at the quota of `analysis`; the configured retry policy, the calls
    recorded in `counts`. A process-local limiter: those calls come before or after the batches."""
    client = rekognition_client(config.rekognition, 4)
    limiter = RateLimiter(config.quota(analysis), rates=quotas)
    return RekognitionCaller(client, config.rekognition.retry_policy, limiter, counts)
