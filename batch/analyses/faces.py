"""Faces: DetectFaces -> table `faces`, one row per face.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, DetectFaces, FaceDetail)
and the Developer Guide, "Detecting faces in an image"
(https://docs.aws.amazon.com/rekognition/latest/dg/faces-detect-images.html).

The box and every landmark are given upright and stored (see `batch.core.geometry`). Pose and eye
direction angles are copied as Rekognition returns them, in the frame it answered in: upright for a
JPEG with Exif orientation (the usual case), the stored frame otherwise. They are not turned with the
image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import flag_columns, member, parse_settings, strings
from batch.analyses.base import Analysis
from batch.core.geometry import BoxPlacement
from batch.core.tables import BOX_FIELDS, point_struct, table_schema

NAME = "faces"
OPERATION = "DetectFaces"
CLIENT_METHOD = "detect_faces"
ORIENTATION_FIELD = "OrientationCorrection"

#: The `Attributes` enum of the botocore model (shape `Attribute`).
ATTRIBUTES: tuple[str, ...] = (
    "DEFAULT", "ALL", "AGE_RANGE", "BEARD", "EMOTIONS", "EYE_DIRECTION", "EYEGLASSES", "EYES_OPEN",
    "GENDER", "MOUTH_OPEN", "MUSTACHE", "FACE_OCCLUDED", "SMILE", "SUNGLASSES",
)  # fmt: skip

#: The `{Value, Confidence}` attributes of a FaceDetail and their column names.
FLAGS: Mapping[str, str] = {
    "Smile": "smile",
    "Eyeglasses": "eyeglasses",
    "Sunglasses": "sunglasses",
    "Beard": "beard",
    "Mustache": "mustache",
    "EyesOpen": "eyes_open",
    "MouthOpen": "mouth_open",
    "FaceOccluded": "face_occluded",
}


@dataclass(frozen=True)
class Settings:
    """`[analyses.faces]` in the config. `attributes` is sent as `Attributes`; ["ALL"] returns every
    attribute, ["DEFAULT"] only box, confidence, pose, quality and landmarks (other columns null)."""

    attributes: tuple[str, ...] = ("ALL",)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.faces") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        return parse_settings(cls, mapping, where, {"attributes": strings(choices=ATTRIBUTES)})


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.detect_faces`."""
    return {"Image": dict(image), "Attributes": list(settings.attributes)}


LANDMARK = point_struct(pa.field("type", pa.string()))
EMOTION = pa.struct([pa.field("type", pa.string()), pa.field("confidence", pa.float64())])


def _flag_fields() -> list[pa.Field]:
    fields = []
    for column in FLAGS.values():
        fields += [pa.field(column, pa.bool_()), pa.field(f"{column}_confidence", pa.float64())]
    return fields


TABLES: Mapping[str, pa.Schema] = {
    "faces": table_schema(
        [
            pa.field("face_index", pa.int32()),
            pa.field("confidence", pa.float64()),
            *BOX_FIELDS,
            pa.field("age_low", pa.int32()),
            pa.field("age_high", pa.int32()),
            pa.field("gender", pa.string()),
            pa.field("gender_confidence", pa.float64()),
            pa.field("emotions", pa.list_(EMOTION)),
            *_flag_fields(),
            pa.field("eye_direction_yaw", pa.float64()),
            pa.field("eye_direction_pitch", pa.float64()),
            pa.field("eye_direction_confidence", pa.float64()),
            pa.field("pose_roll", pa.float64()),
            pa.field("pose_yaw", pa.float64()),
            pa.field("pose_pitch", pa.float64()),
            pa.field("quality_brightness", pa.float64()),
            pa.field("quality_sharpness", pa.float64()),
            pa.field("landmarks", pa.list_(LANDMARK)),
        ]
    ),
}


def emotions(items: list[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """`Emotions` as a list of {type, confidence}; None when absent."""
    if items is None:
        return None
    return [{"type": e.get("Type"), "confidence": e.get("Confidence")} for e in items]


def landmarks(items: list[Mapping[str, Any]] | None, placement: BoxPlacement) -> list[dict[str, Any]] | None:
    """`Landmarks` as a list of {type, x, y, x_px, y_px, stored_x_px, stored_y_px}; None when absent."""
    if items is None:
        return None
    return [{"type": m.get("Type"), **placement.point_columns(m.get("X"), m.get("Y"))} for m in items]


def face_row(index: int, face: Mapping[str, Any], placement: BoxPlacement) -> dict[str, Any]:
    row: dict[str, Any] = {
        "face_index": index,
        "confidence": face.get("Confidence"),
        **placement.box_columns(face.get("BoundingBox")),
        "age_low": member(face, "AgeRange", "Low"),
        "age_high": member(face, "AgeRange", "High"),
        "gender": member(face, "Gender", "Value"),
        "gender_confidence": member(face, "Gender", "Confidence"),
        "emotions": emotions(face.get("Emotions")),
    }
    for attribute, column in FLAGS.items():
        row.update(flag_columns(column, face.get(attribute)))
    row.update(
        {
            "eye_direction_yaw": member(face, "EyeDirection", "Yaw"),
            "eye_direction_pitch": member(face, "EyeDirection", "Pitch"),
            "eye_direction_confidence": member(face, "EyeDirection", "Confidence"),
            "pose_roll": member(face, "Pose", "Roll"),
            "pose_yaw": member(face, "Pose", "Yaw"),
            "pose_pitch": member(face, "Pose", "Pitch"),
            "quality_brightness": member(face, "Quality", "Brightness"),
            "quality_sharpness": member(face, "Quality", "Sharpness"),
            "landmarks": landmarks(face.get("Landmarks"), placement),
        }
    )
    return row


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows per table (without the common columns) of one DetectFaces response."""
    faces = response.get("FaceDetails") or []
    return {"faces": [face_row(index, face, placement) for index, face in enumerate(faces)]}


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
