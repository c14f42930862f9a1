"""The account's applied Rekognition quotas, read from Service Quotas (`ListServiceQuotas`, paginated).

The client is made as the job's other clients are (boto3's lookup: credentials, the run's region, and
the endpoint from `AWS_ENDPOINT_URL_SERVICE_QUOTAS` or `AWS_ENDPOINT_URL`). A read that fails (denied,
endpoint down) is not an error of the run: the caller falls back to the default and says why.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from batch.config.model import RekognitionConfig
from batch.core.redaction import one_line
from batch.core.service_quotas import applied_quotas

__all__ = ["read_applied_quotas"]

SERVICE_CODE = "rekognition"


def read_applied_quotas(
    config: RekognitionConfig, session: Any = None, *, region: str = ""
) -> tuple[dict[str, float] | None, str]:
    """Calls per second per Rekognition Image operation that Service Quotas lists as applied to the
    account in `region` (default: the run's), and "" ; or None and the one-line reason it could not be
    read."""
    client = (session or boto3.session.Session()).client(
        "service-quotas",
        region_name=region or config.region or None,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 3},
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
        ),
    )
    try:
        pages = client.get_paginator("list_service_quotas").paginate(ServiceCode=SERVICE_CODE)
        return applied_quotas(quota for page in pages for quota in page.get("Quotas", [])), ""
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return None, one_line(f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": "))
    except BotoCoreError as exc:
        return None, one_line(f"{type(exc).__name__}: {exc}")
