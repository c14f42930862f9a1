"""The Rekognition caller: one retry layer, every attempt rate-limited and counted."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError
from fakes import FakeClock

from batch.rekognition import CallCounts, RateLimiter, RekognitionCaller
from batch.retry import Outcome, RetryPolicy


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


def caller_for(client: ScriptedClient, *, rate: float = 1000.0, max_attempts: int = 6):
    clock = FakeClock()
    counts = CallCounts()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    caller = RekognitionCaller(
        client, RetryPolicy(max_attempts=max_attempts), limiter, counts, sleep=clock.sleep
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
