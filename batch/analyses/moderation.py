"""Moderation: DetectModerationLabels -> table `moderation`, one row per moderation label.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, DetectModerationLabels)
and the Developer Guide, "Detecting inappropriate images"
(https://docs.aws.amazon.com/rekognition/latest/dg/procedure-moderate-images.html).

`parent_name` is "" for a top-level label; `taxonomy_level` is 1–3 (model version 7 and later).
`content_types` is the response's `ContentTypes` (what kind of picture it is, e.g. "Animated" or
"Illustrated": https://docs.aws.amazon.com/rekognition/latest/dg/bulk-analysis-content-type.html), the
same on every row of an image; an image without moderation labels has no row, so its content types are
not kept. With `project_version` (a custom moderation adapter's ARN, sent as `ProjectVersion`),
`adapter` is the adapter the answer names (the response's `ProjectVersion`: absent when the adapter had
expired and the base model answered). Before the attempt the driver checks the adapter
(`batch.analyses.model_hosting.AdapterHooks`: it exists in the run's region and is usable), so a wrong
ARN stops the run (exit 2) before any image is sent. `HumanLoopActivationOutput` is not kept. No boxes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import number, parse_settings
from batch.analyses.base import Analysis, DriverHooks, DriverSetup
from batch.analyses.custom_labels import check_version_arn
from batch.analyses.model_hosting import AdapterHooks
from batch.core.geometry import BoxPlacement
from batch.core.tables import NAMED_CONFIDENCE, table_schema

NAME = "moderation"
OPERATION = "DetectModerationLabels"
CLIENT_METHOD = "detect_moderation_labels"
ORIENTATION_FIELD = None


@dataclass(frozen=True)
class Settings:
    """`[analyses.moderation]` in the config. `min_confidence` (0–100, the service default 50) is
    always sent as `MinConfidence`; `project_version` (a custom adapter's ARN; "" for none) as
    `ProjectVersion` when set."""

    min_confidence: float = 50.0
    project_version: str = ""

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.moderation") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        checks = {"min_confidence": number(0, 100), "project_version": _adapter_arn}
        return parse_settings(cls, mapping, where, checks)


def _adapter_arn(key: str, value: Any) -> str:
    """ "" or an adapter ARN (`ProjectVersionId`: the pattern of a project version ARN)."""
    return value if value == "" else check_version_arn(key, value)


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.detect_moderation_labels`."""
    request = {"Image": dict(image), "MinConfidence": settings.min_confidence}
    if settings.project_version:
        request["ProjectVersion"] = settings.project_version
    return request


TABLES: Mapping[str, pa.Schema] = {
    "moderation": table_schema(
        [
            pa.field("name", pa.string()),
            pa.field("parent_name", pa.string()),
            pa.field("taxonomy_level", pa.int32()),
            pa.field("confidence", pa.float64()),
            pa.field("model_version", pa.string()),
            pa.field("content_types", pa.list_(NAMED_CONFIDENCE)),
            pa.field("adapter", pa.string()),
        ]
    ),
}


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows per table (without the common columns) of one DetectModerationLabels response.
    `placement` is unused (no boxes); it is taken for the common signature."""
    version = response.get("ModerationModelVersion")
    types = response.get("ContentTypes")
    content_types = (
        None if types is None else [{"name": t.get("Name"), "confidence": t.get("Confidence")} for t in types]
    )
    rows = [
        {
            "name": label.get("Name"),
            "parent_name": label.get("ParentName"),
            "taxonomy_level": label.get("TaxonomyLevel"),
            "confidence": label.get("Confidence"),
            "model_version": version,
            "content_types": content_types,
            "adapter": response.get("ProjectVersion"),
        }
        for label in response.get("ModerationLabels") or []
    ]
    return {"moderation": rows}


@dataclass(frozen=True)
class Moderation(Analysis):
    """DetectModerationLabels; its settings digest is the one of before `project_version` existed when
    no adapter is set, so adding the key re-analyses nothing."""

    def fans_out_with(self, settings: Any) -> bool:
        """An adapter is a resource of the run's region: its calls stay there (another region has no
        such project version)."""
        return self.fans_out and not settings.project_version

    def driver(self, setup: DriverSetup) -> DriverHooks:
        """With an adapter: check it before the attempt (`AdapterHooks`)."""
        return AdapterHooks(setup, self.name) if setup.settings.project_version else DriverHooks()

    def settings_document(self, settings: Any) -> dict[str, Any]:
        document = dataclasses.asdict(settings)
        if not settings.project_version:
            del document["project_version"]
        return document


ANALYSIS = Moderation(
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
