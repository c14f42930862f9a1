"""Service Quotas for Rekognition on the local endpoint: `ListServiceQuotas` and `GetServiceQuota`.

moto's Service Quotas knows only VPC quotas, so the endpoint answers these two operations itself (AWS JSON
1.1, ``X-Amz-Target: ServiceQuotasV20190624.<Operation>``; boto3 finds it through
``AWS_ENDPOINT_URL_SERVICE_QUOTAS``). The applied quotas it lists are the ones it enforces: each Rekognition
Image operation with a quota (`--tps`, `[operations.<Name>] tps`) is listed with its real code and name
(`batch.core.service_quotas`) at that value; operations without one are left out, as Service Quotas leaves
out quotas it has no applied value for. Each region (from the request's signature) lists its own
quotas, those the endpoint enforces there (`--quota-per-region`). `--service-quotas deny` answers
AccessDeniedException instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import botocore.session

from batch.core.service_quotas import QUOTA_CODES, quota_name
from local_stack.errors import ServiceError
from local_stack.validation import validate_request

TARGET_PREFIX = "ServiceQuotasV20190624."
MODES = ("answer", "deny")
ACCOUNT = "123456789012"
REGION = "us-east-1"


class ServiceQuotasApp:
    """`handle(operation, params, region) -> dict` (or ServiceError), from `tps_of(operation, region)
    -> float | None`."""

    def __init__(self, tps_of: Callable[[str, str], float | None], mode: str = "answer") -> None:
        if mode not in MODES:
            raise ValueError(f"service quotas mode must be one of {MODES}, got {mode!r}")
        self._tps_of, self._mode = tps_of, mode
        self._model = botocore.session.get_session().get_service_model("service-quotas")

    def handle(self, operation: str, params: Any, region: str = "") -> dict[str, Any]:
        handler = {"ListServiceQuotas": self._list, "GetServiceQuota": self._get}.get(operation)
        if handler is None:
            raise ServiceError("UnknownOperationException", f"Unknown operation: {TARGET_PREFIX}{operation}")
        if self._mode == "deny":
            raise ServiceError(
                "AccessDeniedException",
                f"User: arn:aws:iam::{ACCOUNT}:user/local is not authorized to perform: "
                f"servicequotas:{operation}",
            )
        request = validate_request(self._model.operation_model(operation).input_shape, params or {})
        return handler(request, region or REGION)

    def _quotas(self, service_code: str, region: str) -> list[dict[str, Any]]:
        if service_code != "rekognition":
            return []
        listed = ((op, code, self._tps_of(op, region)) for op, code in sorted(QUOTA_CODES.items()))
        return [_quota(op, code, tps, region) for op, code, tps in listed if tps is not None]

    def _list(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        quotas = self._quotas(request["ServiceCode"], region)
        if "QuotaCode" in request:
            quotas = [q for q in quotas if q["QuotaCode"] == request["QuotaCode"]]
        start = _page_start(request.get("NextToken"))
        end = start + int(request.get("MaxResults") or 100)
        page: dict[str, Any] = {"Quotas": quotas[start:end]}
        if end < len(quotas):
            page["NextToken"] = str(end)
        return page

    def _get(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        for quota in self._quotas(request["ServiceCode"], region):
            if quota["QuotaCode"] == request["QuotaCode"]:
                return {"Quota": quota}
        raise ServiceError(
            "NoSuchResourceException",
            f"The request failed because the quota {request['QuotaCode']} does not exist.",
        )


def _page_start(token: Any) -> int:
    if token is None:
        return 0
    if not (isinstance(token, str) and token.isdigit()):
        raise ServiceError("InvalidPaginationTokenException", "Invalid pagination token.")
    return int(token)


def _quota(operation: str, code: str, tps: float, region: str) -> dict[str, Any]:
    """One `ServiceQuota` as Service Quotas gives a Rekognition calls-per-second quota in `region`."""
    return {
        "ServiceCode": "rekognition",
        "ServiceName": "Amazon Rekognition",
        "QuotaArn": f"arn:aws:servicequotas:{region}:{ACCOUNT}:rekognition/{code}",
        "QuotaCode": code,
        "QuotaName": quota_name(operation),
        "Value": float(tps),
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
        "QuotaAppliedAtLevel": "ACCOUNT",
    }
