"""The Rekognition caller: one retry layer, every attempt rate-limited and counted."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from fakes import FakeClock

from batch.aws.rekognition import CallCounts, LimiterUnavailable, RateLimiter, RekognitionCaller
from batch.core.calls import request_digest
from batch.core.errors import OutputUnwritable
from batch.core.retry import Outcome, RetryBudget, RetryPolicy
from batch.core.silence import SilenceWatch


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} says no"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "DetectLabels",
    )


class ScriptedClient:
    """Stands in for a boto3 client: answers detect_labels from a script of errors and responses."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []

    def detect_labels(self, **request: Any) -> Any:
        self.requests.append(request)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def caller_for(
    client: ScriptedClient,
    *,
    rate: float = 1000.0,
    max_attempts: int = 6,
    budget: RetryBudget | None = None,
):
    clock = FakeClock()
    counts = CallCounts()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    caller = RekognitionCaller(
        client, RetryPolicy(max_attempts=max_attempts), limiter, counts, budget=budget, sleep=clock.sleep
    )
    return caller, counts, clock


def test_throttled_then_ok_counts_every_attempt() -> None:
    ok = {"Labels": [], "ResponseMetadata": {"HTTPStatusCode": 200}}
    client = ScriptedClient(
        [
            client_error("ProvisionedThroughputExceededException"),
            ReadTimeoutError(endpoint_url="http://x"),
            ok,
        ]
    )
    caller, counts, _ = caller_for(client)
    result = caller.call("detect_labels", "DetectLabels", {"Image": {"Bytes": b"x"}})
    assert result.ok
    assert result.attempts == 3
    assert "ResponseMetadata" not in result.response
    calls, retries, throttled = dict(counts.attempts), counts.retries, counts.throttled
    assert counts.answered == 3
    assert calls == {
        ("DetectLabels", "ProvisionedThroughputExceededException"): 1,
        ("DetectLabels", "ReadTimeoutError"): 1,
        ("DetectLabels", "ok"): 1,
    }
    assert (retries, throttled) == (2, 1)


def test_a_final_error_is_one_attempt_with_its_code() -> None:
    client = ScriptedClient([client_error("InvalidImageFormatException")])
    caller, _, _ = caller_for(client)
    result = caller.call("detect_labels", "DetectLabels", {})
    assert not result.ok
    assert (result.attempts, result.error_code, result.outcome) == (
        1,
        "InvalidImageFormatException",
        Outcome.FINAL,
    )
    assert "says no" in result.message
    assert len(client.requests) == 1


def test_retries_stop_at_the_attempt_cap_and_report_retryable() -> None:
    client = ScriptedClient([client_error("InternalServerError", 500)] * 10)
    caller, _, _ = caller_for(client, max_attempts=3)
    result = caller.call("detect_labels", "DetectLabels", {})
    assert (result.attempts, result.error_code) == (3, "InternalServerError")
    assert result.outcome is not None
    assert result.outcome.retryable


def test_the_rate_limiter_spaces_attempts() -> None:
    ok = {"Labels": []}
    client = ScriptedClient([ok] * 11)
    caller, _, clock = caller_for(client, rate=10.0)
    for _ in range(11):
        caller.call("detect_labels", "DetectLabels", {})
    # Burst of one, then one call per 1/10 s: 11 calls take 1 s of (fake) time.
    assert abs(clock.now - 1.0) < 1e-6


def test_a_dead_endpoint_spends_the_retry_budget_then_calls_fail_at_once() -> None:
    """20 retries in the budget: after that, each call is one attempt and says the budget is spent."""
    client = ScriptedClient([ReadTimeoutError(endpoint_url="http://x")] * 1000)
    budget = RetryBudget(ratio=0.1, capacity=20)
    caller, _, _ = caller_for(client, budget=budget)
    results = [caller.call("detect_labels", "DetectLabels", {}) for _ in range(10)]
    attempts = [r.attempts for r in results]
    # 6 attempts per call while the budget lasts (5 retries each), then only first attempts.
    assert attempts[:3] == [6, 6, 6]
    assert attempts[-3:] == [1, 1, 1]
    assert sum(attempts) - len(attempts) <= 20 + 10 * 0.1 + 1e-9
    assert results[-1].budget_exhausted
    assert not results[0].budget_exhausted


def test_occasional_errors_are_paid_for_by_the_deposits() -> None:
    """5 % of calls fail once: the budget never runs out, every call succeeds."""
    ok = {"Labels": []}
    script: list[Any] = []
    for i in range(2000):
        script += ([client_error("InternalServerError", 500)] if i % 20 == 0 else []) + [ok]
    client = ScriptedClient(script)
    budget = RetryBudget(ratio=0.1, capacity=5)
    caller, _, _ = caller_for(client, budget=budget)
    results = [caller.call("detect_labels", "DetectLabels", {}) for _ in range(2000)]
    assert all(r.ok for r in results)
    assert not budget.exhausted


def test_throttling_does_not_draw_on_the_budget() -> None:
    ok = {"Labels": []}
    client = ScriptedClient([client_error("ThrottlingException")] * 5 + [ok])
    budget = RetryBudget(ratio=0.0, capacity=0)
    caller, _, _ = caller_for(client, budget=budget)
    assert caller.call("detect_labels", "DetectLabels", {}).attempts == 6


def test_pages_follow_next_token_and_retry_each_page_alone() -> None:
    client = ScriptedClient(
        [
            {"Faces": [{"FaceId": "a"}], "NextToken": "1"},
            client_error("ThrottlingException"),
            {"Faces": [{"FaceId": "b"}], "NextToken": "2"},
            client_error("ResourceNotFoundException"),
        ]
    )
    client.list_faces = client.detect_labels  # type: ignore[method-assign]
    caller, counts, _ = caller_for(client)
    pages = list(caller.pages("list_faces", "ListFaces", {"CollectionId": "people"}))
    assert [p.response for p in pages[:2]] == [
        {"Faces": [{"FaceId": "a"}], "NextToken": "1"},
        {"Faces": [{"FaceId": "b"}], "NextToken": "2"},
    ]
    assert (pages[2].ok, pages[2].error_code) == (False, "ResourceNotFoundException")  # and no more
    assert [r.get("NextToken") for r in client.requests] == [None, "1", "1", "2"]
    assert counts.attempts[("ListFaces", "ok")] == 2


def test_threads_sharing_a_caller_each_see_their_own_attempts() -> None:
    """A task's image threads share one caller (and its tenacity `Retrying`): the attempts and retries
    of one call must not leak into another's, however the threads interleave."""
    failures = {f"img-{i}": i % 4 for i in range(64)}  # image i is throttled i % 4 times, then answered
    lock = threading.Lock()

    class KeyedClient:
        def detect_labels(self, **request: Any) -> Any:
            key = request["Image"]["S3Object"]["Name"]
            time.sleep(0.001)  # let the other threads run between attempts
            with lock:
                if failures[key] > 0:
                    failures[key] -= 1
                    raise client_error("ThrottlingException")
            return {"Labels": [{"Name": key}]}

    counts = CallCounts()
    caller = RekognitionCaller(
        KeyedClient(), RetryPolicy(max_attempts=6), RateLimiter(1e6), counts, sleep=lambda _s: time.sleep(0)
    )

    def call(i: int) -> tuple[int, Any]:
        request = {"Image": {"S3Object": {"Bucket": "b", "Name": f"img-{i}"}}}
        return i, caller.call("detect_labels", "DetectLabels", request)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(64)))
    for i, result in results:
        assert result.ok
        assert result.response == {"Labels": [{"Name": f"img-{i}"}]}
        assert result.attempts == 1 + i % 4
    assert counts.retries == sum(i % 4 for i in range(64))


def test_an_endpoint_s_userinfo_never_reaches_the_call_s_message() -> None:
    url = "http://user:s3cr3t@127.0.0.1:9/"
    caller, _, _ = caller_for(ScriptedClient([EndpointConnectionError(endpoint_url=url)] * 2), max_attempts=2)
    result = caller.call("detect_labels", "DetectLabels", {})
    assert (result.error_code, result.attempts) == ("EndpointConnectionError", 2)
    assert result.message == 'Could not connect to the endpoint URL: "http://***@127.0.0.1:9/"'


class SilentClient:
    """An endpoint that accepts and never answers: each attempt takes the read timeout, then fails."""

    def __init__(self, clock: FakeClock, read_timeout: float) -> None:
        self.clock, self.read_timeout, self.attempts = clock, read_timeout, 0

    def detect_labels(self, **request: Any) -> Any:
        self.attempts += 1
        self.clock.sleep(self.read_timeout)
        raise ReadTimeoutError(endpoint_url="http://x")


def test_a_silent_endpoint_is_not_retried_once_the_process_heard_nothing_for_the_limit() -> None:
    """Read timeout 30 s, limit 45 s: the second timeout ends 60 s of silence, and the call says so
    instead of retrying to its six attempts (three minutes)."""
    clock = FakeClock()
    client = SilentClient(clock, read_timeout=30)
    silence = SilenceWatch(45, clock=clock)
    caller = RekognitionCaller(
        client, RetryPolicy(max_attempts=6, max_seconds=1e9), RateLimiter(1000.0, clock=clock,
        sleep=clock.sleep), CallCounts(), budget=RetryBudget(), silence=silence, sleep=clock.sleep,
        clock=clock,
    )  # fmt: skip
    result = caller.call("detect_labels", "DetectLabels", {})
    assert (result.attempts, result.error_code, result.silent) == (2, "ReadTimeoutError", True)
    assert not result.budget_exhausted
    assert caller.call("detect_labels", "DetectLabels", {}).attempts == 1  # still silent: no retry


def test_an_answer_even_an_error_keeps_the_endpoint_alive() -> None:
    clock = FakeClock()
    silence = SilenceWatch(45, clock=clock)
    client = ScriptedClient([client_error("InternalServerError", 500)] * 3 + [{"Labels": []}])
    caller = RekognitionCaller(
        client, RetryPolicy(), RateLimiter(1000.0, clock=clock, sleep=clock.sleep), CallCounts(),
        silence=silence, sleep=clock.sleep, clock=clock,
    )  # fmt: skip
    assert caller.call("detect_labels", "DetectLabels", {}).ok
    assert silence.silent_seconds() == 0


def test_a_rate_limiter_that_cannot_be_asked_fails_the_call_not_the_image() -> None:
    """On a closing worker the cluster limiter's scheduler connection is gone ("ConnectionPool is
    closed"): that must reach the task as an error, never become the image's failed call."""

    class ClosedLimiter:
        def acquire(self, operation: str) -> None:
            raise RuntimeError("ConnectionPool is closed")

        def report_throttle(self, operation: str) -> None:
            pass

    client = ScriptedClient([{"Labels": []}])
    caller = RekognitionCaller(client, RetryPolicy(), ClosedLimiter(), CallCounts())
    with pytest.raises(LimiterUnavailable, match="ConnectionPool is closed"):
        caller.call("detect_labels", "DetectLabels", {})
    assert client.requests == []


class Journal:
    """An image's journal (`batch.core.calls.CallJournal`) that notes what it is told, and when."""

    def __init__(self, client: ScriptedClient, answers: dict[tuple[str, str], Any] | None = None) -> None:
        self.client = client
        self.answers = answers or {}
        self.events: list[tuple[Any, ...]] = []

    def cached(self, operation: str, digest: str) -> Any:
        return self.answers.get((operation, digest))

    def sending(self, operation: str, *, retry: bool) -> None:
        self.events.append(("sending", operation, retry, len(self.client.requests)))

    def answered(self, operation: str, outcome: str, digest: str = "", response: Any = None) -> None:
        self.events.append(("answered", operation, outcome, digest, response))


def test_a_journal_hears_of_each_attempt_before_it_is_sent_and_of_its_answer() -> None:
    ok = {"Labels": [], "ResponseMetadata": {"HTTPStatusCode": 200}}
    client = ScriptedClient([client_error("ThrottlingException"), ok])
    caller, counts, _ = caller_for(client)
    journal = Journal(client)
    request = {"Image": {"S3Object": {"Bucket": "b", "Name": "k.jpg"}}}
    result = caller.call("detect_labels", "DetectLabels", request, journal=journal)
    digest = request_digest("DetectLabels", request)
    assert journal.events == [
        ("sending", "DetectLabels", False, 0),  # noted before the request left
        ("answered", "DetectLabels", "ThrottlingException", "", None),
        ("sending", "DetectLabels", True, 1),
        ("answered", "DetectLabels", "ok", digest, {"Labels": []}),  # the answer, without its metadata
    ]
    assert (result.response, result.attempts) == ({"Labels": []}, 2)
    assert counts.attempts == {("DetectLabels", "ThrottlingException"): 1, ("DetectLabels", "ok"): 1}


def test_an_answer_the_journal_has_is_not_asked_again() -> None:
    client = ScriptedClient([])
    caller, counts, _ = caller_for(client)
    request = {"Image": {"S3Object": {"Bucket": "b", "Name": "k.jpg"}}}
    journal = Journal(client, {("DetectLabels", request_digest("DetectLabels", request)): {"Labels": [1]}})
    result = caller.call("detect_labels", "DetectLabels", request, journal=journal)
    assert (result.response, result.attempts) == ({"Labels": [1]}, 0)
    assert (client.requests, journal.events, counts.attempts) == ([], [], {})


def test_a_journal_that_cannot_keep_an_attempt_stops_it_and_fails_the_call_not_the_image() -> None:
    """The image's record cannot be written before the call (a full disk): the call is not sent, and the
    output's error reaches the task as raised (the run stops, exit 3), never as the image's failed call."""

    class FullDisk(Journal):
        def sending(self, operation: str, *, retry: bool) -> None:
            raise OutputUnwritable("cannot write out/_runs/r1/image-1-00.json.gz: No space left on device")

    client = ScriptedClient([{"Labels": []}])
    caller, counts, _ = caller_for(client)
    with pytest.raises(OutputUnwritable, match="No space left on device"):
        caller.call("detect_labels", "DetectLabels", {}, journal=FullDisk(client))
    assert (client.requests, counts.attempts) == ([], {})
