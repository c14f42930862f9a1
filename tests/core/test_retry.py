"""Retry classification of every error the Rekognition model lists, and the retry policy's behaviour."""

from __future__ import annotations

import botocore.session
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from batch.core.retry import ERROR_OUTCOMES, Outcome, RetryPolicy, classify

IMAGE_OPERATIONS = (
    "DetectLabels",
    "DetectFaces",
    "DetectText",
    "DetectModerationLabels",
    "RecognizeCelebrities",
    "CompareFaces",
    "IndexFaces",
    "SearchFacesByImage",
)


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "DetectLabels",
    )


def modelled_errors() -> set[str]:
    model = botocore.session.get_session().get_service_model("rekognition")
    return {error.name for op in IMAGE_OPERATIONS for error in model.operation_model(op).error_shapes}


def test_every_modelled_error_of_the_image_operations_is_classified() -> None:
    missing = modelled_errors() - set(ERROR_OUTCOMES)
    assert not missing, f"unclassified Rekognition errors: {sorted(missing)}"


@pytest.mark.parametrize("code", sorted(modelled_errors()))
def test_modelled_error_outcome(code: str) -> None:
    expected = {
        "ProvisionedThroughputExceededException": Outcome.THROTTLED,
        "ThrottlingException": Outcome.THROTTLED,
        "InternalServerError": Outcome.TRANSIENT,
        "AccessDeniedException": Outcome.FATAL,
    }.get(code, Outcome.FINAL)
    assert classify(client_error(code)) is expected


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionClosedError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
        EndpointConnectionError(endpoint_url="http://x"),
        client_error("SomethingNew", 503),
    ],
)
def test_dropped_connections_timeouts_and_unknown_5xx_are_transient(exc: Exception) -> None:
    assert classify(exc) is Outcome.TRANSIENT


def test_unknown_4xx_is_final_and_429_is_throttling() -> None:
    assert classify(client_error("SomethingNew", 400)) is Outcome.FINAL
    assert classify(client_error("SomethingNew", 429)) is Outcome.THROTTLED


def failing(errors: list[Exception], then: object = "ok"):
    """A call that raises the given errors in order, then returns `then`; counts its attempts."""
    attempts = []

    def call() -> object:
        attempts.append(1)
        if len(attempts) <= len(errors):
            raise errors[len(attempts) - 1]
        return then

    return call, attempts


def test_throttling_is_retried_with_full_jitter_within_the_cap() -> None:
    sleeps: list[float] = []
    call, attempts = failing([client_error("ThrottlingException")] * 4)
    policy = RetryPolicy(max_attempts=6, backoff_base=0.5, backoff_max=3.0)
    assert policy.retrying(sleep=sleeps.append)(call) == "ok"
    assert len(attempts) == 5
    assert len(sleeps) == 4
    assert all(0 <= s <= 3.0 for s in sleeps)
    ceilings = [min(0.5 * 2**i, 3.0) for i in range(4)]
    assert all(s <= c for s, c in zip(sleeps, ceilings, strict=True))


@pytest.mark.parametrize(
    "code",
    [
        "InvalidImageFormatException",
        "ImageTooLargeException",
        "InvalidS3ObjectException",
        "InvalidParameterException",
        "AccessDeniedException",
    ],
)
def test_final_errors_get_exactly_one_attempt(code: str) -> None:
    sleeps: list[float] = []
    call, attempts = failing([client_error(code)])
    with pytest.raises(ClientError):
        RetryPolicy().retrying(sleep=sleeps.append)(call)
    assert len(attempts) == 1
    assert sleeps == []


def test_attempts_are_capped() -> None:
    call, attempts = failing([client_error("InternalServerError", 500)] * 100)
    with pytest.raises(ClientError):
        RetryPolicy(max_attempts=4).retrying(sleep=lambda _s: None)(call)
    assert len(attempts) == 4
