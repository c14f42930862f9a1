"""The local endpoint's Service Quotas (`local_stack.service_quotas`): answers that botocore's
`service-quotas` model accepts, pages, the codes and names the job maps, and the denying mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore_shapes import validate_response

from batch.core.service_quotas import QUOTA_CODES, applied_quotas
from local_stack.errors import ServiceError
from local_stack.faults import FaultConfig, FaultInjector
from local_stack.server import RekognitionApp
from local_stack.service_quotas import ServiceQuotasApp
from local_stack.stack import LocalStack

TPS = {"DetectLabels": 4.0, "DetectFaces": 7.5}


def app(mode: str = "answer") -> ServiceQuotasApp:
    return ServiceQuotasApp(lambda op, _region: TPS.get(op), mode)


def pages(quotas: ServiceQuotasApp, **request: Any) -> list[dict[str, Any]]:
    found, token = [], None
    while True:
        page = quotas.handle(
            "ListServiceQuotas",
            {"ServiceCode": "rekognition", **request, **({"NextToken": token} if token else {})},
        )
        validate_response("ListServiceQuotas", page, "service-quotas")
        found.append(page)
        token = page.get("NextToken")
        if not token:
            return found


def test_it_lists_the_quotas_it_enforces_with_their_real_codes_and_names() -> None:
    (page,) = pages(app())
    assert {q["QuotaCode"] for q in page["Quotas"]} == {
        QUOTA_CODES["DetectLabels"],
        QUOTA_CODES["DetectFaces"],
    }
    assert applied_quotas(page["Quotas"]) == TPS  # the job's mapping reads back what the endpoint enforces


def test_it_pages_and_filters_by_code() -> None:
    every = ServiceQuotasApp(lambda op, _region: 5.0)
    listed = pages(every, MaxResults=4)
    assert len(listed) == -(-len(QUOTA_CODES) // 4)
    assert applied_quotas(q for page in listed for q in page["Quotas"]) == dict.fromkeys(QUOTA_CODES, 5.0)
    (only,) = pages(every, QuotaCode=QUOTA_CODES["DetectText"])
    assert [q["QuotaName"].rsplit(" ", 1)[-1] for q in only["Quotas"]] == ["DetectText"]
    assert pages(every, ServiceCode="ec2") == [{"Quotas": []}]


def test_get_service_quota_answers_one_known_quota() -> None:
    answer = app().handle(
        "GetServiceQuota", {"ServiceCode": "rekognition", "QuotaCode": QUOTA_CODES["DetectFaces"]}
    )
    validate_response("GetServiceQuota", answer, "service-quotas")
    assert answer["Quota"]["Value"] == 7.5
    with pytest.raises(ServiceError, match="NoSuchResourceException"):
        app().handle(
            "GetServiceQuota", {"ServiceCode": "rekognition", "QuotaCode": QUOTA_CODES["DetectText"]}
        )


def test_requests_are_validated_against_the_model() -> None:
    with pytest.raises(ServiceError, match="ServiceCode"):
        app().handle("ListServiceQuotas", {})
    with pytest.raises(ServiceError, match="InvalidPaginationTokenException"):
        app().handle("ListServiceQuotas", {"ServiceCode": "rekognition", "NextToken": "x"})


@pytest.mark.parametrize("operation", ["ListServiceQuotas", "GetServiceQuota"])
def test_the_denying_mode_answers_access_denied(operation: str) -> None:
    with pytest.raises(ServiceError, match=f"AccessDeniedException.*servicequotas:{operation}"):
        app("deny").handle(operation, {"ServiceCode": "rekognition", "QuotaCode": "L-E29B542B"})


def test_the_endpoint_routes_service_quotas_calls_apart_from_rekognitions() -> None:
    """The wire answer is a 200 JSON body, logged as a Service Quotas call, with none of the
    Rekognition operations' quota applied (a quota of 1 call/s, asked three times at once)."""
    faults = FaultInjector(FaultConfig.load(flags={"tps": 1.0}))
    endpoint = RekognitionApp(lambda: None, faults)
    body = json.dumps({"ServiceCode": "rekognition"}).encode()
    answers = [endpoint.handle("ServiceQuotasV20190624.ListServiceQuotas", body) for _ in range(3)]
    assert {(a.status, a.service, a.operation) for a in answers} == {
        (200, "service-quotas", "ListServiceQuotas")
    }
    assert applied_quotas(json.loads(answers[0].body)["Quotas"]) == dict.fromkeys(QUOTA_CODES, 1.0)


@pytest.mark.integration
def test_a_stock_client_pages_through_the_endpoint_found_by_its_variable(tmp_path: Path) -> None:
    """boto3's own `service-quotas` client, its endpoint from `AWS_ENDPOINT_URL_SERVICE_QUOTAS` only:
    the parsed pages validate against the output shape, and the enforced per-operation quota is read."""
    config = tmp_path / "endpoint.toml"
    config.write_text("tps = 6\n\n[operations.DetectLabels]\ntps = 2\n")
    with LocalStack(extra_args=["--config", str(config)]) as stack, pytest.MonkeyPatch.context() as mp:
        for name, value in stack.env.items():
            mp.setenv(name, value)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        client = boto3.client("service-quotas")
        assert client.meta.endpoint_url == stack.rekognition_url
        listed = []
        for page in client.get_paginator("list_service_quotas").paginate(
            ServiceCode="rekognition", PaginationConfig={"PageSize": 5}
        ):
            validate_response("ListServiceQuotas", page, "service-quotas")
            listed += page["Quotas"]
        assert applied_quotas(listed) == {**dict.fromkeys(QUOTA_CODES, 6.0), "DetectLabels": 2.0}
        assert [c["operation"] for c in stack.calls("service-quotas")] == ["ListServiceQuotas"] * 4
        assert stack.calls() == []  # Rekognition's calls apart
