"""batch.aws.logs: what any handler prints of a log record holds no endpoint password."""

from __future__ import annotations

import io
import logging

from botocore.exceptions import EndpointConnectionError

from batch.aws.logs import redact_log_records

URL = "http://user:s3cr3t-pw@127.0.0.1:9/"


def test_a_record_s_message_and_traceback_are_redacted_whatever_the_handler() -> None:
    redact_log_records()
    redact_log_records()  # idempotent: one wrapper, not two
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("rekbatch-test-redaction")
    logger.addHandler(handler)
    try:
        logger.warning("calling %s failed", URL)
        try:
            raise EndpointConnectionError(endpoint_url=URL)
        except EndpointConnectionError:
            logger.exception("batch failed")
        logger.warning("%s and %d", "no url", 2)
    finally:
        logger.removeHandler(handler)
    printed = stream.getvalue()
    assert "s3cr3t-pw" not in printed
    assert "calling http://***@127.0.0.1:9/ failed" in printed
    assert 'Could not connect to the endpoint URL: "http://***@127.0.0.1:9/"' in printed
    assert "WARNING no url and 2" in printed
