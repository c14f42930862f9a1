"""The local endpoint's Custom Labels operations and moderation adapters, socket-free
(`RekognitionApp.handle`): the model lifecycle, answers from the image content, and every answer valid
against botocore's output shape."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.parsers import JSONParser
from botocore_shapes import rekognition_model, validate_response
from conftest import make_image

from local_stack.collections import CollectionStore
from local_stack.custom_labels import ModelStore
from local_stack.decoding import decode_upright
from local_stack.faults import FaultConfig, FaultInjector
from local_stack.operations import Call
from local_stack.server import RekognitionApp
from local_stack.vision import AnalysisCache, analyse_pixels

MODEL = "arn:aws:rekognition:us-east-1:123456789012:project/widgets/version/widgets.1/1767261600000"
ADAPTER = "arn:aws:rekognition:us-east-1:123456789012:project/mod/version/mod.1/1767261600001"
PICTURE = make_image((400, 200), (("box", (40, 20, 80, 60)), ("face", (200, 50, 60, 80))), fmt="PNG")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> RekognitionApp:
    analyses = AnalysisCache(lambda data: analyse_pixels(decode_upright(data)))
    models = ModelStore([MODEL], [ADAPTER], start_seconds=5.0, clock=clock)
    collections = CollectionStore()
    return RekognitionApp(lambda: Call(analyses, None, collections, models), FaultInjector(FaultConfig()))


def call(app: RekognitionApp, operation: str, **request: Any) -> tuple[int, dict[str, Any]]:
    """The answer's status and JSON body; a 200's body parsed as botocore parses it, then checked
    against the operation's output shape."""
    answer = app.handle(f"RekognitionService.{operation}", json.dumps(request).encode())
    body = json.loads(answer.body)
    if answer.status == 200:
        shape = rekognition_model().operation_model(operation).output_shape
        parsed = JSONParser().parse({"body": answer.body, "headers": {}, "status_code": 200}, shape)
        validate_response(operation, parsed)
    return answer.status, body


def image() -> dict[str, Any]:
    return {"Bytes": base64.b64encode(PICTURE).decode()}


def status(app: RekognitionApp) -> str:
    _, projects = call(app, "DescribeProjects", ProjectNames=["widgets"])
    (project,) = projects["ProjectDescriptions"]
    assert project["ProjectArn"] == "arn:aws:rekognition:us-east-1:123456789012:project/widgets/1700000000000"
    _, versions = call(
        app, "DescribeProjectVersions", ProjectArn=project["ProjectArn"], VersionNames=["widgets.1"]
    )
    (version,) = versions["ProjectVersionDescriptions"]
    return str(version["Status"])


def test_a_model_starts_stopped_runs_after_its_start_delay_and_stops(
    app: RekognitionApp, clock: Clock
) -> None:
    assert status(app) == "STOPPED"
    code, body = call(app, "DetectCustomLabels", ProjectVersionArn=MODEL, Image=image())
    assert (code, body["__type"]) == (400, "ResourceNotReadyException")
    assert call(app, "StartProjectVersion", ProjectVersionArn=MODEL, MinInferenceUnits=1) == (
        200,
        {"Status": "STARTING"},
    )
    clock.now = 4.9
    assert status(app) == "STARTING"
    clock.now = 5.0
    assert status(app) == "RUNNING"
    code, body = call(app, "DetectCustomLabels", ProjectVersionArn=MODEL, Image=image())
    assert code == 200
    box, people = body["CustomLabels"]
    assert box["Name"] == "Box"
    assert box["Geometry"]["BoundingBox"] == {"Width": 0.2, "Height": 0.3, "Left": 0.1, "Top": 0.1}
    assert people == {"Name": "People", "Confidence": 99.9}
    _, capped = call(app, "DetectCustomLabels", ProjectVersionArn=MODEL, Image=image(), MaxResults=1)
    assert len(capped["CustomLabels"]) == 1
    assert call(app, "StopProjectVersion", ProjectVersionArn=MODEL) == (200, {"Status": "STOPPING"})
    assert status(app) == "STOPPED"
    code, body = call(app, "StopProjectVersion", ProjectVersionArn=MODEL)
    assert (code, body["__type"]) == (400, "ResourceInUseException")


def test_unknown_models_projects_and_a_project_arn_read_off_a_version_arn_are_not_found(
    app: RekognitionApp,
) -> None:
    other = MODEL.replace("widgets.1", "widgets.2")
    code, body = call(app, "DetectCustomLabels", ProjectVersionArn=other, Image=image())
    assert (code, body["__type"]) == (400, "ResourceNotFoundException")
    assert call(app, "DescribeProjects", ProjectNames=["gadgets"]) == (200, {"ProjectDescriptions": []})
    guessed = "arn:aws:rekognition:us-east-1:123456789012:project/widgets/1767261600000"
    code, body = call(app, "DescribeProjectVersions", ProjectArn=guessed)
    assert (code, body["__type"]) == (400, "ResourceNotFoundException")


def test_moderation_names_a_known_adapter_and_answers_content_types(app: RekognitionApp) -> None:
    code, body = call(app, "DetectModerationLabels", Image=image(), ProjectVersion=ADAPTER)
    assert code == 200
    assert body["ProjectVersion"] == ADAPTER
    assert [t["Name"] for t in body["ContentTypes"]] == ["Illustrated"]
    code, body = call(app, "DetectModerationLabels", Image=image(), ProjectVersion=MODEL)
    assert (code, body["__type"]) == (400, "InvalidParameterException")
    blank = {"Bytes": base64.b64encode(make_image((200, 200))).decode()}
    code, body = call(app, "DetectModerationLabels", Image=blank)
    assert body["ContentTypes"] == []
    assert "ProjectVersion" not in body


def test_an_adapters_project_is_found_only_with_the_content_moderation_feature(app: RekognitionApp) -> None:
    # botocore's DescribeProjects `Features`: "If no value is specified, CUSTOM_LABELS is used".
    assert call(app, "DescribeProjects", ProjectNames=["mod"]) == (200, {"ProjectDescriptions": []})
    _, found = call(app, "DescribeProjects", ProjectNames=["mod", "widgets"], Features=["CONTENT_MODERATION"])
    (project,) = found["ProjectDescriptions"]
    assert (project["ProjectArn"], project["Feature"]) == (
        "arn:aws:rekognition:us-east-1:123456789012:project/mod/1700000000000",
        "CONTENT_MODERATION",
    )
    _, versions = call(
        app, "DescribeProjectVersions", ProjectArn=project["ProjectArn"], VersionNames=["mod.1"]
    )
    (version,) = versions["ProjectVersionDescriptions"]
    assert (version["ProjectVersionArn"], version["Status"], version["Feature"]) == (
        ADAPTER,
        "TRAINING_COMPLETED",
        "CONTENT_MODERATION",
    )
