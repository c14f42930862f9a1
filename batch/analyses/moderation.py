"""Moderation: DetectModerationLabels -> table `moderation`, one row per moderation label.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, DetectModerationLabels)
and the Developer Guide, "Detecting inappropriate images"
(https://docs.aws.amazon.com/rekognition/latest/dg/procedure-moderate-images.html).

`parent_name` is "" for a top-level label; `taxonomy_level` is 1–3 (model version 7 and later).
The response's `ContentTypes`, `HumanLoopActivationOutput` and `ProjectVersion` are not kept.
No boxes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import number, parse_settings
from batch.analyses.base import Analysis
from batch.core.geometry import BoxPlacement
from batch.core.tables import table_schema

NAME = "moderation"
OPERATION = "DetectModerationLabels"
CLIENT_METHOD = "detect_moderation_labels"
ORIENTATION_FIELD = None


@dataclass(frozen=True)
class Settings:
    """`[analyses.moderation]` in the config. `min_confidence` (0–100, the service default 50) is
    always sent as `MinConfidence`."""

    min_confidence: float = 50.0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.moderation") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        return parse_settings(cls, mapping, where, {"min_confidence": number(0, 100)})


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.detect_moderation_labels`."""
    return {"Image": dict(image), "MinConfidence": settings.min_confidence}


TABLES: Mapping[str, pa.Schema] = {
    "moderation": table_schema(
        [
            pa.field("name", pa.string()),
            pa.field("parent_name", pa.string()),
            pa.field("taxonomy_level", pa.int32()),
            pa.field("confidence", pa.float64()),
            pa.field("model_version", pa.string()),
        ]
    ),
}


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows per table (without the common columns) of one DetectModerationLabels response.
    `placement` is unused (no boxes); it is taken for the common signature."""
    version = response.get("ModerationModelVersion")
    rows = [
        {
            "name": label.get("Name"),
            "parent_name": label.get("ParentName"),
            "taxonomy_level": label.get("TaxonomyLevel"),
            "confidence": label.get("Confidence"),
            "model_version": version,
        }
        for label in response.get("ModerationLabels") or []
    ]
    return {"moderation": rows}


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
