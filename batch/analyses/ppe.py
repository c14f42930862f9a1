"""PPE: DetectProtectiveEquipment -> tables `ppe_persons` and `ppe_equipment`.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, DetectProtectiveEquipment,
ProtectiveEquipmentPerson, EquipmentDetection, ProtectiveEquipmentSummary) and the Developer Guide,
"Detecting personal protective equipment" (https://docs.aws.amazon.com/rekognition/latest/dg/ppe-detection.html)
and "Guidelines and quotas" (https://docs.aws.amazon.com/rekognition/latest/dg/limits.html): 64 to 4,096
px a side, 4 MB as `Image.Bytes` (5 MB for the other operations), up to 15 persons per image.

* `ppe_persons`: one row per detected person: its box, the body parts detected on it (with or without
  equipment) and, when `required_equipment_types` is set, the summary's verdict for it.
* `ppe_equipment`: one row per item of equipment on a body part of a person, with its box and whether
  it covers the body part.

`person_id` is unique only within one response (one image). DetectProtectiveEquipment has no
OrientationCorrection; that its boxes follow the Exif rule of the other operations (upright for a JPEG
with Exif orientation) is not documented by AWS, we assume it (`BoxPlacement.for_response`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import flag_columns, member, number, parse_settings, strings
from batch.analyses.base import Analysis
from batch.core.geometry import BoxPlacement
from batch.core.image_checks import AnalysisLimits
from batch.core.tables import BOX_FIELDS, NAMED_CONFIDENCE, table_schema

NAME = "ppe"
OPERATION = "DetectProtectiveEquipment"
CLIENT_METHOD = "detect_protective_equipment"
ORIENTATION_FIELD = None

#: The `ProtectiveEquipmentType` enum of the botocore model.
EQUIPMENT_TYPES: tuple[str, ...] = ("FACE_COVER", "HAND_COVER", "HEAD_COVER")

#: "Guidelines and quotas" (limits.html): "The minimum image dimension for DetectProtectiveEquipment is
#: 64 pixels", "The maximum image dimensions for DetectProtectiveEquipment is 4096 pixels", "The limit is
#: 4 MB for the DetectProtectiveEquipment API" (raw bytes; MB as in the model's 5 MB = 5242880). The
#: 15 MB S3-object limit is the general one.
LIMITS = AnalysisLimits(min_side_px=64, max_side_px=4096, max_request_bytes=4 * 1024 * 1024)

#: The summary's lists and the `summary` value of the persons they name.
SUMMARY_LISTS: Mapping[str, str] = {
    "PersonsWithRequiredEquipment": "with_required",
    "PersonsWithoutRequiredEquipment": "without_required",
    "PersonsIndeterminate": "indeterminate",
}


@dataclass(frozen=True)
class Settings:
    """`[analyses.ppe]` in the config: the `SummarizationAttributes` of the request, sent only when
    `required_equipment_types` is not empty. `min_confidence` (0–100; AWS answers below 50 as 50) is
    the confidence the summary counts detections from."""

    required_equipment_types: tuple[str, ...] = ()
    min_confidence: float = 80.0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.ppe") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        checks = {
            "required_equipment_types": strings(choices=EQUIPMENT_TYPES),  # ProtectiveEquipmentTypes
            "min_confidence": number(0, 100),  # Percent
        }
        return parse_settings(cls, mapping, where, checks)


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.detect_protective_equipment`."""
    request: dict[str, Any] = {"Image": dict(image)}
    if settings.required_equipment_types:
        request["SummarizationAttributes"] = {
            "MinConfidence": settings.min_confidence,
            "RequiredEquipmentTypes": list(settings.required_equipment_types),
        }
    return request


TABLES: Mapping[str, pa.Schema] = {
    "ppe_persons": table_schema(
        [
            pa.field("person_id", pa.int32()),
            pa.field("confidence", pa.float64()),
            *BOX_FIELDS,
            pa.field("body_parts", pa.list_(NAMED_CONFIDENCE)),
            pa.field("equipment_count", pa.int32()),
            pa.field("summary", pa.string()),
            pa.field("model_version", pa.string()),
        ]
    ),
    "ppe_equipment": table_schema(
        [
            pa.field("person_id", pa.int32()),
            pa.field("body_part", pa.string()),
            pa.field("body_part_confidence", pa.float64()),
            pa.field("equipment_type", pa.string()),
            pa.field("confidence", pa.float64()),
            *BOX_FIELDS,
            pa.field("covers_body_part", pa.bool_()),
            pa.field("covers_body_part_confidence", pa.float64()),
        ]
    ),
}


def _verdicts(summary: Mapping[str, Any] | None) -> dict[Any, str]:
    """Person id -> its `summary` value, from the response's Summary (empty without one)."""
    verdicts: dict[Any, str] = {}
    for field_name, verdict in SUMMARY_LISTS.items():
        for person_id in member(summary, field_name) or []:
            verdicts.setdefault(person_id, verdict)
    return verdicts


def _equipment_rows(person: Mapping[str, Any], placement: BoxPlacement) -> list[dict[str, Any]]:
    return [
        {
            "person_id": person.get("Id"),
            "body_part": part.get("Name"),
            "body_part_confidence": part.get("Confidence"),
            "equipment_type": item.get("Type"),
            "confidence": item.get("Confidence"),
            **placement.box_columns(item.get("BoundingBox")),
            **flag_columns("covers_body_part", item.get("CoversBodyPart")),
        }
        for part in person.get("BodyParts") or []
        for item in part.get("EquipmentDetections") or []
    ]


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows per table (without the common columns) of one DetectProtectiveEquipment response."""
    verdicts = _verdicts(response.get("Summary"))
    persons, equipment = [], []
    for person in response.get("Persons") or []:
        items = _equipment_rows(person, placement)
        parts = person.get("BodyParts")
        persons.append(
            {
                "person_id": person.get("Id"),
                "confidence": person.get("Confidence"),
                **placement.box_columns(person.get("BoundingBox")),
                "body_parts": None
                if parts is None
                else [{"name": p.get("Name"), "confidence": p.get("Confidence")} for p in parts],
                "equipment_count": len(items),
                "summary": verdicts.get(person.get("Id")),
                "model_version": response.get("ProtectiveEquipmentModelVersion"),
            }
        )
        equipment += items
    return {"ppe_persons": persons, "ppe_equipment": equipment}


ANALYSIS = Analysis(
    fans_out=True,
    name=NAME,
    operation=OPERATION,
    client_method=CLIENT_METHOD,
    settings_type=Settings,
    tables=TABLES,
    build_request=build_request,
    flatten=flatten,
    orientation_field=ORIENTATION_FIELD,
    # "Group 2" of https://aws.amazon.com/rekognition/pricing/ (with DetectLabels): $0.001 per image,
    # us-east-1, first million images a month.
    price=0.001,
    limits=LIMITS,
)
