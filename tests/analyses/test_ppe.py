"""batch.analyses.ppe: its request, its rows with upright boxes in every orientation, its summary
column, and its own image limits (the Developer Guide's "Guidelines and quotas")."""

from __future__ import annotations

from typing import Any

import pytest

from batch.analyses import ppe
from batch.analyses.base import SentImage
from batch.analyses.registry import REGISTRY
from batch.core.geometry import ORIENTATIONS, Box, BoxPlacement, upright_size, upright_to_stored_box
from batch.core.image_checks import INVALID_PARAMETER, TOO_LARGE, ImageRules, Refusal, Route, plan_image
from batch.core.image_header import ImageHeader

IMAGE = {"S3Object": {"Bucket": "site", "Name": "gate/a.jpg"}}
#: Upright boxes of a person and of the helmet on its head.
PERSON = Box(0.1, 0.2, 0.3, 0.7)
HELMET = Box(0.15, 0.2, 0.2, 0.1)


def bounding_box(box: Box) -> dict[str, float]:
    return {"Left": box.left, "Top": box.top, "Width": box.width, "Height": box.height}


def response(person: Box, helmet: Box, summary: dict[str, list[int]] | None = None) -> dict[str, Any]:
    helmet_item = {
        "BoundingBox": bounding_box(helmet),
        "Confidence": 97.5,
        "Type": "HEAD_COVER",
        "CoversBodyPart": {"Confidence": 96.0, "Value": True},
    }
    answer: dict[str, Any] = {
        "ProtectiveEquipmentModelVersion": "1.0",
        "Persons": [
            {
                "BodyParts": [
                    {"Name": "FACE", "Confidence": 99.0, "EquipmentDetections": []},
                    {"Name": "HEAD", "Confidence": 98.0, "EquipmentDetections": [helmet_item]},
                ],
                "BoundingBox": bounding_box(person),
                "Confidence": 99.5,
                "Id": 0,
            },
            {"BoundingBox": bounding_box(person), "Confidence": 60.0, "Id": 1},
        ],
    }
    if summary is not None:
        answer["Summary"] = summary
    return answer


def test_the_request_sends_the_summary_only_with_required_equipment_types() -> None:
    assert ppe.build_request(IMAGE, ppe.Settings()) == {"Image": IMAGE}
    chosen = ppe.Settings.from_mapping({"required_equipment_types": ["HEAD_COVER", "FACE_COVER"]})
    assert ppe.build_request(IMAGE, chosen) == {
        "Image": IMAGE,
        "SummarizationAttributes": {
            "MinConfidence": 80.0,
            "RequiredEquipmentTypes": ["HEAD_COVER", "FACE_COVER"],
        },
    }


def expected_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    return (
        round(box.left * width),
        round(box.top * height),
        round(box.width * width),
        round(box.height * height),
    )


def pixel_box(row: dict[str, Any], prefix: str = "box_") -> tuple[int, int, int, int]:
    return tuple(row[f"{prefix}{side}_px"] for side in ("left", "top", "width", "height"))  # type: ignore[return-value]


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_boxes_are_upright_in_every_orientation(orientation: int, image_format: str) -> None:
    """A JPEG with Exif orientation is answered upright; a PNG with an eXIf chunk in its stored frame
    (Rekognition ignores the chunk): both give the same upright rows."""
    placement = BoxPlacement.for_response(
        image_format=image_format,
        stored_width=800,
        stored_height=600,
        exif_orientation=orientation,
        orientation_correction=None,
    )
    answered_person, answered_helmet = PERSON, HELMET
    if image_format == "PNG":
        answered_person = upright_to_stored_box(PERSON, orientation)
        answered_helmet = upright_to_stored_box(HELMET, orientation)
    rows = ppe.flatten(response(answered_person, answered_helmet), placement)
    width, height = upright_size(800, 600, orientation)
    first, second = rows["ppe_persons"]
    (helmet,) = rows["ppe_equipment"]
    assert pixel_box(first) == expected_box(PERSON, width, height)
    assert pixel_box(helmet) == expected_box(HELMET, width, height)
    assert (helmet["box_left"], helmet["box_top"]) == pytest.approx((HELMET.left, HELMET.top))
    stored = upright_to_stored_box(HELMET, orientation)
    assert pixel_box(helmet, "stored_box_") == expected_box(stored, 800, 600)
    assert pixel_box(second) == pixel_box(first)


def test_rows_keep_every_body_part_the_equipment_and_its_coverage() -> None:
    rows = ppe.flatten(response(PERSON, HELMET), BoxPlacement(800, 600))
    first, second = rows["ppe_persons"]
    assert first["body_parts"] == [{"name": "FACE", "confidence": 99.0}, {"name": "HEAD", "confidence": 98.0}]
    assert (first["person_id"], first["confidence"], first["equipment_count"]) == (0, 99.5, 1)
    assert (first["summary"], first["model_version"]) == (None, "1.0")
    assert (second["body_parts"], second["equipment_count"]) == (None, 0)  # BodyParts absent: null
    (helmet,) = rows["ppe_equipment"]
    assert {key: helmet[key] for key in list(helmet)[:5]} == {
        "person_id": 0,
        "body_part": "HEAD",
        "body_part_confidence": 98.0,
        "equipment_type": "HEAD_COVER",
        "confidence": 97.5,
    }
    assert (helmet["covers_body_part"], helmet["covers_body_part_confidence"]) == (True, 96.0)
    assert ppe.flatten({}, BoxPlacement(1, 1)) == {"ppe_persons": [], "ppe_equipment": []}


def test_the_summary_column_says_what_the_summary_says_of_each_person() -> None:
    summary = {
        "PersonsWithRequiredEquipment": [0],
        "PersonsWithoutRequiredEquipment": [],
        "PersonsIndeterminate": [1],
    }
    persons = ppe.flatten(response(PERSON, HELMET, summary), BoxPlacement(800, 600))["ppe_persons"]
    assert [p["summary"] for p in persons] == ["with_required", "indeterminate"]
    summary = {"PersonsWithoutRequiredEquipment": [0, 1]}
    persons = ppe.flatten(response(PERSON, HELMET, summary), BoxPlacement(800, 600))["ppe_persons"]
    assert [p["summary"] for p in persons] == ["without_required", "without_required"]


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        (SentImage(64, 4096, 4 * 1024 * 1024, as_bytes=True), None),
        (SentImage(4096, 64, 15 * 1024 * 1024, as_bytes=False), None),
        (SentImage(None, None, 100, as_bytes=False), None),  # size unknown: Rekognition's to say
        (SentImage(63, 500, 100, as_bytes=False), INVALID_PARAMETER),
        (SentImage(500, 4097, 100, as_bytes=False), TOO_LARGE),
        (SentImage(4097, 4097, 100, as_bytes=True), TOO_LARGE),
        (SentImage(500, 500, 4 * 1024 * 1024 + 1, as_bytes=True), TOO_LARGE),
    ],
)
def test_ppe_limits_are_those_of_the_developer_guide(sent: SentImage, code: str | None) -> None:
    refusal = REGISTRY["ppe"].refusal(sent)
    assert (refusal and refusal.code) == code
    if refusal is not None:
        assert refusal.status == "rejected"
        assert "DetectProtectiveEquipment" in refusal.reason


def test_other_analyses_have_no_limits_of_their_own() -> None:
    huge = SentImage(9000, 9000, 5 * 1024 * 1024, as_bytes=True)
    # custom_labels: 4 MB as bytes ("Running a trained ... model", see batch.analyses.custom_labels).
    assert [name for name, analysis in REGISTRY.items() if analysis.refusal(huge)] == ["ppe", "custom_labels"]


def test_an_image_of_64_to_79_px_a_side_is_sent_for_ppe_alone() -> None:
    """Rekognition's 80 px minimum is not DetectProtectiveEquipment's (64): the plan lets such an
    image through when ppe is among its analyses, and every other analysis refuses it on its own."""
    small = ImageHeader("JPEG", 72, 96, 1)
    refused = plan_image(1000, small, ImageRules())
    assert isinstance(refused, Refusal)
    assert refused.code == INVALID_PARAMETER
    shortest = min(REGISTRY[name].min_side_px for name in ("faces", "ppe"))
    assert plan_image(1000, small, ImageRules(min_side_px=shortest)) is Route.S3_OBJECT
    sent = SentImage(72, 96, 1000, as_bytes=False)
    assert [name for name, analysis in REGISTRY.items() if analysis.refusal(sent) is None] == ["ppe"]
    faces_refusal = REGISTRY["faces"].refusal(sent)
    assert faces_refusal is not None
    assert (faces_refusal.code, faces_refusal.reason) == (
        INVALID_PARAMETER,
        "72x96 px: under the 80 px a side DetectFaces reads",
    )
    assert REGISTRY["ppe"].refusal(SentImage(63, 96, 1000, as_bytes=False)) is not None
