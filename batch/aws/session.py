"""What botocore will use for this run, checked before anything is listed: a region and credentials.

Without a region, S3 still answers (its endpoint is global) while every Rekognition call fails; without
credentials, nothing works. Both are resolved as boto3 resolves them (environment, profile, config
files, instance or task role), so the check never disagrees with the calls that follow.
"""

from __future__ import annotations

from typing import Any

import boto3

from batch.core.errors import ConfigError

__all__ = ["checked_region", "resolved_region"]

REGION_HELP = (
    "set AWS_DEFAULT_REGION (botocore does not read AWS_REGION), `region` in your AWS profile, or "
    "rekognition.region in the config (REKBATCH_REKOGNITION__REGION)"
)
CREDENTIALS_HELP = (
    "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a role provides them "
    "(EC2 instance profile, ECS task role, EKS service account)"
)


def resolved_region(configured: str) -> str:
    """The region Rekognition will be called in: `configured`, else boto3's lookup; "" for none."""
    return str(configured or boto3.session.Session().region_name or "")


def checked_region(configured: str, session: Any = None) -> str:
    """The region Rekognition will be called in (`configured`, else boto3's lookup); ConfigError (exit 2)
    with how to set it when there is none, or when no credentials can be found."""
    session = session or boto3.session.Session(region_name=configured or None)
    if not session.region_name:
        raise ConfigError(f"no AWS region: Rekognition is called in one region; {REGION_HELP}")
    if session.get_credentials() is None:
        raise ConfigError(f"no AWS credentials found: {CREDENTIALS_HELP}")
    return str(session.region_name)
