"""Reading the account's quotas (`batch.aws.service_quotas`): a read that cannot be made is not an error
of the run but (None, one line saying why), so the run falls back to the default and says so."""

from __future__ import annotations

import pytest

from batch.aws.service_quotas import read_applied_quotas
from batch.config.model import RekognitionConfig
from local_stack.s3server import free_port


def test_an_endpoint_that_refuses_connections_gives_none_and_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = f"http://user:secret@127.0.0.1:{free_port()}"  # nothing listens; the userinfo must not leak
    monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", dead)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    applied, reason = read_applied_quotas(RekognitionConfig(region="eu-west-3", connect_timeout=1.0))
    assert applied is None
    assert reason.startswith("EndpointConnectionError: Could not connect to the endpoint URL")
    assert "secret" not in reason
    assert "http://***@127.0.0.1:" in reason
