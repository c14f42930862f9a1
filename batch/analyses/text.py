"""Text: DetectText -> table `text`, one row per detection (each LINE and each WORD).

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, DetectText,
TextDetection) and the Developer Guide, "Detecting text"
(https://docs.aws.amazon.com/rekognition/latest/dg/text-detecting-text-procedure.html).

`text_id` is unique only within one response (one image); a WORD's `parent_id` is the `text_id` of its
LINE, and a LINE's is null. DetectText has no OrientationCorrection; that its boxes follow the Exif rule
of the other operations (upright for a JPEG with Exif orientation) is not documented by AWS, we assume
it (see `batch.core.geometry.BoxPlacement.for_response`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import member, number, optional, parse_settings
from batch.analyses.base import Analysis
from batch.core.geometry import BoxPlacement
from batch.core.tables import BOX_FIELDS, point_struct, table_schema

NAME = "text"
OPERATION = "DetectText"
CLIENT_METHOD = "detect_text"
ORIENTATION_FIELD = None


@dataclass(frozen=True)
class Settings:
    """`[analyses.text]` in the config: the `Filters.WordFilter` of DetectText. Each is optional; unset
    values are not sent (the service defaults apply), and `Filters` is omitted when all are unset."""

    min_confidence: float | None = None
    min_bounding_box_height: float | None = None
    min_bounding_box_width: float | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.text") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        checks = {
            "min_confidence": optional(number(0, 100)),  # Percent
            "min_bounding_box_height": optional(number(0, 1)),  # BoundingBoxHeight
            "min_bounding_box_width": optional(number(0, 1)),  # BoundingBoxWidth
        }
        return parse_settings(cls, mapping, where, checks)


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.detect_text`."""
    word_filter = {
        "MinConfidence": settings.min_confidence,
        "MinBoundingBoxHeight": settings.min_bounding_box_height,
        "MinBoundingBoxWidth": settings.min_bounding_box_width,
    }
    word_filter = {key: value for key, value in word_filter.items() if value is not None}
    request: dict[str, Any] = {"Image": dict(image)}
    if word_filter:
        request["Filters"] = {"WordFilter": word_filter}
    return request


POINT = point_struct()

TABLES: Mapping[str, pa.Schema] = {
    "text": table_schema(
        [
            pa.field("text_id", pa.int32()),
            pa.field("parent_id", pa.int32()),
            pa.field("type", pa.string()),
            pa.field("detected_text", pa.string()),
            pa.field("confidence", pa.float64()),
            *BOX_FIELDS,
            pa.field("polygon", pa.list_(POINT)),
            pa.field("model_version", pa.string()),
        ]
    ),
}


def _polygon(points: list[Mapping[str, Any]] | None, placement: BoxPlacement) -> list[dict[str, Any]] | None:
    if points is None:
        return None
    return [placement.point_columns(p.get("X"), p.get("Y")) for p in points]


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows per table (without the common columns) of one DetectText response."""
    version = response.get("TextModelVersion")
    rows = [
        {
            "text_id": detection.get("Id"),
            "parent_id": detection.get("ParentId"),
            "type": detection.get("Type"),
            "detected_text": detection.get("DetectedText"),
            "confidence": detection.get("Confidence"),
            **placement.box_columns(member(detection, "Geometry", "BoundingBox")),
            "polygon": _polygon(member(detection, "Geometry", "Polygon"), placement),
            "model_version": version,
        }
        for detection in response.get("TextDetections") or []
    ]
    return {"text": rows}


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
)
