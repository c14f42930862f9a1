"""Which quota each operation uses and where it came from (`batch.core.service_quotas`): the mapping of
Service Quotas' Rekognition quotas to operations, by code then by name, and the precedence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.core.service_quotas import (
    QUOTA_CODES,
    Quota,
    applied_quotas,
    choose_quotas,
    fallback_note,
    quota_name,
    quota_operation,
)

#: As Service Quotas lists them (names and codes of the Rekognition Image quotas).
LISTED = [
    {"QuotaCode": "L-E29B542B", "QuotaName": quota_name("DetectLabels"), "Value": 50.0},
    {"QuotaCode": "L-A5121FD7", "QuotaName": quota_name("DetectFaces"), "Value": 100.0},
    {
        "QuotaCode": "L-6F294C5B",
        "QuotaName": "Transactions per second per account for the Amazon Rekognition Image personal "
        "protective equipment operation DetectProtectiveEquipment",
        "Value": 5.0,
    },
    # Not Rekognition Image operations: never mapped.
    {
        "QuotaCode": "L-5EAC8E57",
        "QuotaName": "Transactions per second per account for the Amazon Rekognition Video stored video get "
        "operation GetLabelDetection",
        "Value": 20.0,
    },
    {
        "QuotaCode": "L-14D0BC19",
        "QuotaName": "Amazon Rekognition Custom Labels projects per account",
        "Value": 100.0,
    },
]


def test_each_image_quota_maps_to_its_operation_by_code() -> None:
    assert applied_quotas(LISTED) == {
        "DetectLabels": 50.0,
        "DetectFaces": 100.0,
        "DetectProtectiveEquipment": 5.0,
    }
    assert {quota_operation({"QuotaCode": code}) for code in QUOTA_CODES.values()} == set(QUOTA_CODES)


def test_a_quota_with_an_unknown_code_maps_by_its_name() -> None:
    assert quota_operation({"QuotaCode": "L-00000000", "QuotaName": quota_name("DetectText")}) == "DetectText"
    colon = "Transactions per second per account for the Amazon Rekognition Image operation: DetectText"
    assert quota_operation({"QuotaName": colon}) == "DetectText"
    video = "Transactions per second per account for the Amazon Rekognition Video operation StartFaceSearch"
    assert quota_operation({"QuotaCode": "L-00000000", "QuotaName": video}) is None
    assert quota_operation({}) is None


@pytest.mark.parametrize("value", [None, 0, -1.0, float("nan"), float("inf"), True, "50"])
def test_a_quota_without_a_usable_value_is_unknown(value: object) -> None:
    assert applied_quotas([{"QuotaCode": "L-E29B542B", "Value": value}]) == {}


SOURCES_SET = st.sampled_from(["flag", "config", "default"])
OPERATIONS = st.sampled_from(sorted(QUOTA_CODES))
TPS = st.floats(min_value=0.1, max_value=1000, allow_nan=False)


@given(
    wanted=st.dictionaries(OPERATIONS, st.tuples(TPS, SOURCES_SET), min_size=1),
    applied=st.none() | st.dictionaries(OPERATIONS, TPS),
    default=TPS,
)
def test_a_users_quota_wins_then_service_quotas_then_the_default(
    wanted: dict[str, tuple[float, str]], applied: dict[str, float] | None, default: float
) -> None:
    chosen = choose_quotas({op: Quota(*q) for op, q in wanted.items()}, applied, default)
    assert set(chosen) == set(wanted)
    for operation, (tps, source) in wanted.items():
        if source != "default":
            assert chosen[operation] == Quota(tps, source)
        elif applied is not None and operation in applied:
            assert chosen[operation] == Quota(applied[operation], "service-quotas")
        else:
            assert chosen[operation] == Quota(default, "default")


def test_the_note_names_the_operations_that_fell_back_and_why() -> None:
    chosen = {
        "DetectLabels": Quota(50.0, "default"),
        "DetectFaces": Quota(20.0, "service-quotas"),
        "DetectText": Quota(50.0, "default"),
    }
    assert fallback_note(chosen, "eu-west-3", "AccessDeniedException: no") == (
        "rekbatch: quotas: Service Quotas not readable in eu-west-3 (AccessDeniedException: no); using the "
        "default 50 calls/s for DetectLabels, DetectText (set [quotas] or --tps to choose)"
    )
    assert fallback_note(chosen, "eu-west-3", "").startswith(
        "rekbatch: quotas: Service Quotas in eu-west-3 has no applied quota for them; using the default 50"
    )
    assert fallback_note({"DetectFaces": Quota(20.0, "service-quotas")}, "eu-west-3", "") is None


def test_a_quota_is_positive_and_names_a_known_source() -> None:
    with pytest.raises(ValueError, match="source"):
        Quota(5.0, "guess")
    with pytest.raises(ValueError, match="> 0"):
        Quota(0.0, "flag")
