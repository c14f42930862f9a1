"""Labels: DetectLabels -> tables `labels`, `label_instances`, `image_properties`.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, DetectLabels) and the
Developer Guide, "Detecting labels in an image"
(https://docs.aws.amazon.com/rekognition/latest/dg/labels-detect-labels-image.html).

* `labels`: one row per label per image.
* `label_instances`: one row per instance (box) of a label; only common objects have instances.
* `image_properties`: one row per image, only when `image_properties = true` (Features IMAGE_PROPERTIES).
  Instance `dominant_colors` are also only returned then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import boolean, integer, member, names, number, parse_settings, strings
from batch.analyses.base import Analysis
from batch.core.geometry import BoxPlacement
from batch.core.tables import BOX_FIELDS, table_schema

NAME = "labels"
OPERATION = "DetectLabels"
CLIENT_METHOD = "detect_labels"
ORIENTATION_FIELD = "OrientationCorrection"

# Bounds from the botocore input shape (checked against the model in tests/analyses/test_analyses.py).
_FILTER_ITEMS = 100  # GeneralLabelsFilterList max
_FILTER_LENGTH = 50  # GeneralLabelsFilterValue max
_FILTER_PATTERN = "[A-Za-z0-9àâèçñó'-_(). ]*"  # GeneralLabelsFilterValue pattern, verbatim
_MAX_DOMINANT_COLORS = 20  # DetectLabelsMaxDominantColors max


@dataclass(frozen=True)
class Settings:
    """`[analyses.labels]` in the config.

    Every value is sent explicitly (MinConfidence, MaxLabels, Features), even when it equals the
    service default, so that a run's request does not change if AWS changes a default. The four
    filters go to `Settings.GeneralLabels` and are sent only when one is non-empty;
    `max_dominant_colors` is sent only with `image_properties = true`.
    """

    min_confidence: float = 55.0
    max_labels: int = 1000
    label_inclusion_filters: tuple[str, ...] = ()
    label_exclusion_filters: tuple[str, ...] = ()
    label_category_inclusion_filters: tuple[str, ...] = ()
    label_category_exclusion_filters: tuple[str, ...] = ()
    image_properties: bool = False
    max_dominant_colors: int = 10

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.labels") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        filters = strings(max_items=_FILTER_ITEMS, max_length=_FILTER_LENGTH, pattern=_FILTER_PATTERN)
        checks = {
            "min_confidence": number(0, 100),
            "max_labels": integer(0),
            "label_inclusion_filters": filters,
            "label_exclusion_filters": filters,
            "label_category_inclusion_filters": filters,
            "label_category_exclusion_filters": filters,
            "image_properties": boolean(),
            "max_dominant_colors": integer(0, _MAX_DOMINANT_COLORS),
        }
        return parse_settings(cls, mapping, where, checks)


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.detect_labels` (image: `{"S3Object": ...}` or `{"Bytes": ...}`)."""
    features = ["GENERAL_LABELS", "IMAGE_PROPERTIES"] if settings.image_properties else ["GENERAL_LABELS"]
    request: dict[str, Any] = {
        "Image": dict(image),
        "MinConfidence": settings.min_confidence,
        "MaxLabels": settings.max_labels,
        "Features": features,
    }
    general = {
        "LabelInclusionFilters": list(settings.label_inclusion_filters),
        "LabelExclusionFilters": list(settings.label_exclusion_filters),
        "LabelCategoryInclusionFilters": list(settings.label_category_inclusion_filters),
        "LabelCategoryExclusionFilters": list(settings.label_category_exclusion_filters),
    }
    general = {key: value for key, value in general.items() if value}
    extra: dict[str, Any] = {}
    if general:
        extra["GeneralLabels"] = general
    if settings.image_properties:
        extra["ImageProperties"] = {"MaxDominantColors": settings.max_dominant_colors}
    if extra:
        request["Settings"] = extra
    return request


#: A DominantColor, with the model's member names in snake case.
DOMINANT_COLOR = pa.struct(
    [
        pa.field("red", pa.int32()),
        pa.field("green", pa.int32()),
        pa.field("blue", pa.int32()),
        pa.field("hex_code", pa.string()),
        pa.field("css_color", pa.string()),
        pa.field("simplified_color", pa.string()),
        pa.field("pixel_percent", pa.float64()),
    ]
)
_DOMINANT_COLORS = pa.list_(DOMINANT_COLOR)


def _quality_fields(prefix: str) -> list[pa.Field]:
    return [
        pa.field(f"{prefix}brightness", pa.float64()),
        pa.field(f"{prefix}sharpness", pa.float64()),
        pa.field(f"{prefix}contrast", pa.float64()),
        pa.field(f"{prefix}dominant_colors", _DOMINANT_COLORS),
    ]


TABLES: Mapping[str, pa.Schema] = {
    "labels": table_schema(
        [
            pa.field("name", pa.string()),
            pa.field("confidence", pa.float64()),
            pa.field("parents", pa.list_(pa.string())),
            pa.field("aliases", pa.list_(pa.string())),
            pa.field("categories", pa.list_(pa.string())),
            pa.field("instance_count", pa.int32()),
            pa.field("model_version", pa.string()),
        ]
    ),
    "label_instances": table_schema(
        [
            pa.field("name", pa.string()),
            pa.field("instance_index", pa.int32()),
            pa.field("confidence", pa.float64()),
            *BOX_FIELDS,
            pa.field("dominant_colors", _DOMINANT_COLORS),
        ]
    ),
    "image_properties": table_schema(
        [*_quality_fields(""), *_quality_fields("foreground_"), *_quality_fields("background_")]
    ),
}


def _dominant_colors(colors: list[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    if colors is None:
        return None
    return [
        {
            "red": c.get("Red"),
            "green": c.get("Green"),
            "blue": c.get("Blue"),
            "hex_code": c.get("HexCode"),
            "css_color": c.get("CSSColor"),
            "simplified_color": c.get("SimplifiedColor"),
            "pixel_percent": c.get("PixelPercent"),
        }
        for c in colors
    ]


def _quality_columns(prefix: str, part: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        f"{prefix}brightness": member(part, "Quality", "Brightness"),
        f"{prefix}sharpness": member(part, "Quality", "Sharpness"),
        f"{prefix}contrast": member(part, "Quality", "Contrast"),
        f"{prefix}dominant_colors": _dominant_colors(member(part, "DominantColors")),
    }


def _label_rows(labels: list[Mapping[str, Any]], version: str | None) -> list[dict[str, Any]]:
    return [
        {
            "name": label.get("Name"),
            "confidence": label.get("Confidence"),
            "parents": names(label.get("Parents")),
            "aliases": names(label.get("Aliases")),
            "categories": names(label.get("Categories")),
            "instance_count": len(label.get("Instances") or []),
            "model_version": version,
        }
        for label in labels
    ]


def _instance_rows(labels: list[Mapping[str, Any]], placement: BoxPlacement) -> list[dict[str, Any]]:
    return [
        {
            "name": label.get("Name"),
            "instance_index": index,
            "confidence": instance.get("Confidence"),
            **placement.box_columns(instance.get("BoundingBox")),
            "dominant_colors": _dominant_colors(instance.get("DominantColors")),
        }
        for label in labels
        for index, instance in enumerate(label.get("Instances") or [])
    ]


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows per table (without the common columns) of one DetectLabels response."""
    labels = response.get("Labels") or []
    properties = response.get("ImageProperties")
    property_rows = []
    if properties is not None:
        property_rows.append(
            {
                **_quality_columns("", properties),
                **_quality_columns("foreground_", properties.get("Foreground")),
                **_quality_columns("background_", properties.get("Background")),
            }
        )
    return {
        "labels": _label_rows(labels, response.get("LabelModelVersion")),
        "label_instances": _instance_rows(labels, placement),
        "image_properties": property_rows,
    }


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
