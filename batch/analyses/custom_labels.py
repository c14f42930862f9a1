"""Custom Labels: DetectCustomLabels with one or more model versions -> table `custom_labels`.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, DetectCustomLabels,
CustomLabel, Geometry, ProjectVersionArn) and the Custom Labels Developer Guide, "Analyzing an image with
a trained model" (https://docs.aws.amazon.com/rekognition/latest/customlabels-dg/detecting-custom-labels.html)
and "Running a trained Amazon Rekognition Custom Labels model"
(https://docs.aws.amazon.com/rekognition/latest/customlabels-dg/running-model.html): a model answers only
while it runs, and is billed per inference hour while it runs, used or not; image bytes must be under
4.0 MB.

* `custom_labels`: one row per label per model per image: its name and confidence, its upright box and
  polygon when the model localises objects (`Geometry`; null for an image-level label), and the model
  version ARN.

One DetectCustomLabels call per model per image. The models must be RUNNING before the run: the driver
checks them (`batch.analyses.model_hosting`) and, only with `--start-models`, starts them and stops them
at the end. DetectCustomLabels has no OrientationCorrection; its boxes are read with the Exif rule of
the other operations, as for `ppe` (an assumption, not documented by AWS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import boolean, integer, member, number, optional, parse_settings
from batch.analyses.base import Analysis, DriverHooks, DriverSetup, ImageInput, MultiOutcome
from batch.analyses.model_hosting import HOUR_PRICE, HOUR_PRICE_KEY, SUMMARY_FIELDS, VERSION_ARN, ModelHooks
from batch.core.calls import Call
from batch.core.errors import ConfigError
from batch.core.geometry import BoxPlacement
from batch.core.image_checks import AnalysisLimits
from batch.core.tables import BOX_FIELDS, point_struct, table_schema

NAME = "custom_labels"
OPERATION = "DetectCustomLabels"
CLIENT_METHOD = "detect_custom_labels"

#: "Images passed as image bytes must be smaller than 4.0 MB" (running-model.html).
LIMITS = AnalysisLimits(max_request_bytes=4 * 1024 * 1024)


def check_version_arn(key: str, value: Any) -> str:
    """A project version ARN as the botocore model's pattern has it; ConfigError naming `key`."""
    if not isinstance(value, str) or not VERSION_ARN.fullmatch(value):
        raise ConfigError(
            f"{key}: a model version ARN arn:aws:rekognition:REGION:ACCOUNT:project/NAME/version/"
            f"VERSION/NUMBER, got {value!r}"
        )
    return value


def version_arns(key: str, value: Any) -> tuple[str, ...]:
    """A list of distinct model version ARNs."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{key}: must be a list of model version ARNs, got {value!r}")
    arns = tuple(check_version_arn(key, item) for item in value)
    if len(set(arns)) != len(arns):
        raise ConfigError(f"{key}: a model is listed twice: {list(arns)}")
    return arns


@dataclass(frozen=True)
class Settings:
    """`[analyses.custom_labels]` in the config.

    `min_confidence` and `max_results` are sent as `MinConfidence` and `MaxResults` when set (unset:
    each label's assumed threshold, every label). `start_models` (`--start-models`), `inference_units`,
    `start_timeout_seconds` and `poll_seconds` say how the driver starts the models that are not
    running; they do not change the answers, so they are not part of the settings digest.
    """

    models: tuple[str, ...] = ()
    min_confidence: float | None = None
    max_results: int | None = None
    start_models: bool = False
    inference_units: int = 1
    start_timeout_seconds: float = 1800.0
    poll_seconds: float = 30.0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.custom_labels") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        checks = {
            "models": version_arns,
            "min_confidence": optional(number(0, 100)),  # Percent
            "max_results": optional(integer(0)),  # UInteger
            "start_models": boolean(),
            "inference_units": integer(1),  # InferenceUnits
            "start_timeout_seconds": number(0),
            "poll_seconds": number(0),
        }
        return parse_settings(cls, mapping, where, checks)


def build_request(image: Mapping[str, Any], settings: Settings, model: str = "") -> dict[str, Any]:
    """Keyword arguments for `client.detect_custom_labels` with the model `model`."""
    request: dict[str, Any] = {"ProjectVersionArn": model, "Image": dict(image)}
    if settings.min_confidence is not None:
        request["MinConfidence"] = settings.min_confidence
    if settings.max_results is not None:
        request["MaxResults"] = settings.max_results
    return request


POINT = point_struct()

TABLES: Mapping[str, pa.Schema] = {
    "custom_labels": table_schema(
        [
            pa.field("name", pa.string()),
            pa.field("confidence", pa.float64()),
            *BOX_FIELDS,
            pa.field("polygon", pa.list_(POINT)),
            pa.field("model_arn", pa.string()),
        ]
    ),
}


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows (without the common columns and `model_arn`) of one DetectCustomLabels response."""
    rows = []
    for label in response.get("CustomLabels") or []:
        points = member(label, "Geometry", "Polygon")
        rows.append(
            {
                "name": label.get("Name"),
                "confidence": label.get("Confidence"),
                **placement.box_columns(member(label, "Geometry", "BoundingBox")),
                "polygon": None
                if points is None
                else [placement.point_columns(p.get("X"), p.get("Y")) for p in points],
            }
        )
    return {"custom_labels": rows}


@dataclass(frozen=True)
class CustomLabels(Analysis):
    """One DetectCustomLabels call per model; the models checked (and started, if asked) by the driver."""

    def run(self, image: ImageInput, settings: Any, call: Call) -> MultiOutcome:
        """Each model in turn; the first call that fails stops the image (it is tried again whole)."""
        rows: list[dict[str, Any]] = []
        placement = image.placement(None)
        for model in settings.models:
            result = call(self.client_method, self.operation, build_request(image.image, settings, model))
            if result.response is None:
                return MultiOutcome({"custom_labels": rows}, failed=(self.operation, result))
            found = flatten(result.response, placement)["custom_labels"]
            rows += [{**row, "model_arn": model} for row in found]
        return MultiOutcome({"custom_labels": rows})

    def request(self, image: Mapping[str, Any], key: str, settings: Any) -> dict[str, Any]:
        """The request to the first model (`run` sends one per model)."""
        return build_request(image, settings, settings.models[0])

    def settings_document(self, settings: Any) -> dict[str, Any]:
        """What the answers depend on: the models (in any order) and the request options."""
        return {
            "models": sorted(settings.models),
            "min_confidence": settings.min_confidence,
            "max_results": settings.max_results,
        }

    def planned_calls(self, settings: Any) -> int:
        return len(settings.models)

    def check(self, settings: Any) -> None:
        if not settings.models:
            raise ConfigError("analyses.custom_labels.models: list at least one model version ARN")

    def extra_prices(self) -> dict[str, float]:
        return {HOUR_PRICE_KEY: HOUR_PRICE}

    def summary_fields(self) -> dict[str, Any]:
        return dict(SUMMARY_FIELDS)

    def driver(self, setup: DriverSetup) -> DriverHooks:
        return ModelHooks(setup, self.name)


ANALYSIS = CustomLabels(
    name=NAME,
    operation=OPERATION,
    client_method=CLIENT_METHOD,
    settings_type=Settings,
    tables=TABLES,
    build_request=build_request,
    flatten=flatten,
    orientation_field=None,
    # No charge per image: the model's running hours are the bill (`HOUR_PRICE_KEY`).
    price=0.0,
    extra_operations=(),
    limits=LIMITS,
)
