"""One endpoint, several regions: the region a request is signed for picks its quota and its Service
Quotas answers, and is logged with the call."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

from batch.aws.s3 import bucket_region
from local_stack.faults import FaultConfig, FaultInjector, region_quotas
from local_stack.server import signed_region
from local_stack.service_quotas import ServiceQuotasApp
from local_stack.stack import LocalStack


def test_the_region_is_read_from_a_sigv4_credential_scope() -> None:
    header = (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/us-west-2/rekognition/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )
    assert signed_region(header) == "us-west-2"
    assert signed_region("") == ""


def test_each_region_has_its_own_bucket_at_its_own_quota() -> None:
    now = [0.0]
    injector = FaultInjector(FaultConfig.load(flags={"tps": 2.0}), lambda: now[0], {"us-west-2": 1.0})
    east = [injector.decide("DetectLabels", "us-east-1").error for _ in range(3)]
    west = [injector.decide("DetectLabels", "us-west-2").error for _ in range(2)]
    throttled = "ProvisionedThroughputExceededException"
    assert east == [None, None, throttled]  # a bucket of 2, apart from the other region's
    assert west == [None, throttled]
    assert injector.quota("DetectLabels", "us-west-2") == 1.0
    assert injector.quota("DetectLabels", "eu-west-1") == 2.0
    quotas = ServiceQuotasApp(injector.quota)
    listed = quotas.handle("ListServiceQuotas", {"ServiceCode": "rekognition"}, "us-west-2")["Quotas"]
    assert {q["Value"] for q in listed} == {1.0}
    assert {q["QuotaArn"].split(":")[3] for q in listed} == {"us-west-2"}
    assert region_quotas(["us-west-2=50", "eu-west-1=5"]) == {"us-west-2": 50.0, "eu-west-1": 5.0}
    for bad in ("us-west-2", "us-west-2=0", "=5"):
        with pytest.raises(ValueError, match="REGION=TPS"):
            region_quotas([bad])


@pytest.mark.integration
def test_calls_signed_for_two_regions_are_held_and_logged_apart_and_buckets_say_their_region() -> None:
    """us-east-1 at 0.1 calls/s (a bucket of 1, refilled in 10 s), us-west-2 at 3 (a bucket of 3)."""
    with LocalStack(tps=0.1, extra_args=["--quota-per-region", "us-west-2=3"]) as stack:
        outcomes = {}
        for region in ("us-east-1", "us-west-2"):
            client = boto3.session.Session().client(
                "rekognition",
                region_name=region,
                endpoint_url=stack.rekognition_url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(retries={"total_max_attempts": 1}),
            )
            for _ in range(3):
                try:
                    client.list_collections()
                    outcomes.setdefault(region, []).append("ok")
                except client.exceptions.ProvisionedThroughputExceededException:
                    outcomes.setdefault(region, []).append("throttled")
        logged = [(c["region"], c["outcome"]) for c in stack.calls()]
        s3 = stack.s3_client()
        s3.create_bucket(Bucket="east")
        s3.create_bucket(Bucket="west", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        assert [bucket_region(s3, name) for name in ("east", "west", "missing")] == [
            "us-east-1",
            "us-west-2",
            None,
        ]
    assert outcomes == {"us-east-1": ["ok", "throttled", "throttled"], "us-west-2": ["ok", "ok", "ok"]}
    assert logged[0] == ("us-east-1", "ok")
    assert [region for region, _ in logged] == ["us-east-1"] * 3 + ["us-west-2"] * 3
