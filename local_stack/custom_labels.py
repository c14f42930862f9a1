"""Custom Labels models and moderation adapters on the local endpoint (docs/local-stack.md).

The endpoint knows the model versions and adapters it was started with (`--custom-labels-model ARN`,
`--moderation-adapter ARN`, repeatable). A model starts STOPPED: StartProjectVersion makes it STARTING,
and RUNNING `--model-start-seconds` later (read lazily, on the next call that looks); StopProjectVersion
answers STOPPING and the model is STOPPED at once. DetectCustomLabels answers only a RUNNING model
(ResourceNotReadyException otherwise, ResourceNotFoundException for an unknown ARN), from the image's
content: each green rectangle is a `Box` with its Geometry (upright box and polygon), and an image with a
face (red or orange) the image-level label `People` (no Geometry). An adapter needs no starting;
DescribeProjects finds its project only with `Features` CONTENT_MODERATION (without `Features`, AWS
describes CUSTOM_LABELS projects only).

Each project's ARN ends with `PROJECT_NUMBER`, a version's with its own number, as in AWS, so a project
ARN cannot be read off a version ARN: DescribeProjects finds it by name.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from local_stack import responses as r
from local_stack.errors import ServiceError, invalid_parameter
from local_stack.vision import Analysis

#: The creation number every local project's ARN ends with (a version's ARN ends with another).
PROJECT_NUMBER = 1700000000000
#: A version ARN: (prefix up to the account, project name, version name).
VERSION_ARN = re.compile(r"(arn:[a-z\d-]+:rekognition:[a-z\d-]+:\d{12}):project/([^/]+)/version/([^/]+)/\d+")
CREATED = 1700000000.0  # CreationTimestamp of every local project and version


@dataclass
class HostedModel:
    """A model version or adapter the endpoint knows, and its running state."""

    arn: str
    feature: str  # "CUSTOM_LABELS" or "CONTENT_MODERATION"
    status: str = "STOPPED"
    since: float = 0.0
    units: int | None = None


class ModelStore:
    """The endpoint's models and adapters, shared by its request threads."""

    def __init__(
        self,
        models: Iterable[str] = (),
        adapters: Iterable[str] = (),
        start_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._start_seconds = start_seconds
        self._models = {arn: HostedModel(arn, "CUSTOM_LABELS") for arn in models}
        for arn in adapters:
            self._models[arn] = HostedModel(arn, "CONTENT_MODERATION", "TRAINING_COMPLETED")
        for arn in self._models:
            if not VERSION_ARN.fullmatch(arn):
                raise ValueError(f"not a project version ARN: {arn}")

    def project_arn(self, name: str, features: Iterable[str] | None = None) -> str | None:
        """The ARN of the project `name`, if one of the endpoint's models (of one of `features`, when
        given) is in it."""
        for arn, model in self._models.items():
            prefix, project, _ = _parts(arn)
            if project == name and (features is None or model.feature in features):
                return f"{prefix}:project/{project}/{PROJECT_NUMBER}"
        return None

    def versions(self, project_arn: str) -> list[HostedModel]:
        """The models of the project with this ARN, their status brought up to date."""
        with self._lock:
            found = [m for m in self._models.values() if self.project_arn(_parts(m.arn)[1]) == project_arn]
            for model in found:
                self._settle(model)
            return found

    def get(self, arn: str) -> HostedModel:
        with self._lock:
            model = self._models.get(arn)
            if model is None:
                raise ServiceError("ResourceNotFoundException", f"The resource {arn} was not found.")
            self._settle(model)
            return model

    def start(self, arn: str, units: int) -> str:
        model = self.get(arn)
        with self._lock:
            if model.status not in ("STOPPED", "TRAINING_COMPLETED"):
                raise ServiceError("ResourceInUseException", f"Model {arn} is {model.status}.")
            model.status, model.since, model.units = "STARTING", self._clock(), units
            return model.status

    def stop(self, arn: str) -> str:
        model = self.get(arn)
        with self._lock:
            if model.status not in ("RUNNING", "STARTING"):
                raise ServiceError("ResourceInUseException", f"Model {arn} is {model.status}.")
            model.status, model.units = "STOPPED", None
            return "STOPPING"

    def _settle(self, model: HostedModel) -> None:
        if model.status == "STARTING" and self._clock() - model.since >= self._start_seconds:
            model.status = "RUNNING"


def _parts(arn: str) -> tuple[str, str, str]:
    found = VERSION_ARN.fullmatch(arn)
    assert found is not None  # checked when the store was made
    return found.group(1), found.group(2), found.group(3)


def describe_projects(call: Any, req: dict[str, Any]) -> dict[str, Any]:
    """The named projects of the features asked, as AWS: without `Features`, CUSTOM_LABELS only (an
    adapter's project is found only with `Features: ["CONTENT_MODERATION"]`)."""
    store: ModelStore = call.models
    names = req.get("ProjectNames") or []
    found = []
    for feature in req.get("Features") or ["CUSTOM_LABELS"]:
        found += [(arn, feature) for name in names if (arn := store.project_arn(name, [feature]))]
    return {
        "ProjectDescriptions": [
            {"ProjectArn": arn, "CreationTimestamp": CREATED, "Status": "CREATED", "Feature": feature}
            for arn, feature in found
        ]
    }


def describe_project_versions(call: Any, req: dict[str, Any]) -> dict[str, Any]:
    store: ModelStore = call.models
    models = store.versions(req["ProjectArn"])
    if not models:
        raise ServiceError("ResourceNotFoundException", f"The project {req['ProjectArn']} was not found.")
    wanted = set(req.get("VersionNames") or [])
    descriptions = []
    for model in models:
        if wanted and _parts(model.arn)[2] not in wanted:
            continue
        description: dict[str, Any] = {
            "ProjectVersionArn": model.arn,
            "CreationTimestamp": CREATED,
            "Status": model.status,
            "Feature": model.feature,
        }
        if model.units is not None:
            description["MinInferenceUnits"] = model.units
        descriptions.append(description)
    return {"ProjectVersionDescriptions": descriptions}


def start_project_version(call: Any, req: dict[str, Any]) -> dict[str, Any]:
    return {"Status": call.models.start(req["ProjectVersionArn"], req["MinInferenceUnits"])}


def stop_project_version(call: Any, req: dict[str, Any]) -> dict[str, Any]:
    return {"Status": call.models.stop(req["ProjectVersionArn"])}


def detect_custom_labels(call: Any, req: dict[str, Any]) -> dict[str, Any]:
    model = call.models.get(req["ProjectVersionArn"])
    if model.feature != "CUSTOM_LABELS":
        raise invalid_parameter(f"{model.arn} is not a Custom Labels model.")
    if model.status != "RUNNING":
        raise ServiceError("ResourceNotReadyException", f"The model {model.arn} is {model.status}.")
    labels = custom_labels(call.analyse(req["Image"]))
    labels = [label for label in labels if label["Confidence"] >= req.get("MinConfidence", 50.0)]
    if "MaxResults" in req:
        labels = labels[: req["MaxResults"]]
    return {"CustomLabels": labels}


def custom_labels(analysis: Analysis) -> list[dict[str, Any]]:
    """What the local model sees: each green rectangle a `Box`, a face anywhere `People`."""
    found = []
    for obj in analysis.of_kind("box"):
        box = r.bounding_box(obj.box, analysis)
        geometry = {"BoundingBox": box, "Polygon": r.polygon(box)}
        found.append({"Name": "Box", "Confidence": r.confidence(obj), "Geometry": geometry})
    if analysis.faces:
        found.append({"Name": "People", "Confidence": max(r.confidence(f) for f in analysis.faces)})
    return sorted(found, key=lambda label: -label["Confidence"])


def check_adapter(call: Any, arn: str) -> None:
    """DetectModerationLabels' `ProjectVersion`: an adapter the endpoint knows."""
    if call.models.get(arn).feature != "CONTENT_MODERATION":
        raise invalid_parameter(f"{arn} is not a moderation adapter.")


def content_types(analysis: Analysis) -> list[dict[str, Any]]:
    """DetectModerationLabels' ContentTypes: a picture with any palette rectangle is `Illustrated`."""
    if not analysis.objects:
        return []
    return [{"Name": "Illustrated", "Confidence": max(r.confidence(o) for o in analysis.objects)}]


OPERATIONS: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "DescribeProjects": describe_projects,
    "DescribeProjectVersions": describe_project_versions,
    "StartProjectVersion": start_project_version,
    "StopProjectVersion": stop_project_version,
    "DetectCustomLabels": detect_custom_labels,
}
