"""Celebrities: RecognizeCelebrities -> tables `celebrities` and `unrecognized_faces`.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, RecognizeCelebrities,
Celebrity, ComparedFace) and the Developer Guide, "Recognizing celebrities in an image"
(https://docs.aws.amazon.com/rekognition/latest/dg/celebrities-procedure-image.html).

* `celebrities`: one row per recognised celebrity face.
* `unrecognized_faces`: one row per face that is not a celebrity (its box and confidence), so that
  "faces, recognised or not" is a UNION of the two and the count per image is a GROUP BY.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import member, parse_settings
from batch.analyses.base import Analysis
from batch.core.geometry import BoxPlacement
from batch.core.tables import BOX_FIELDS, table_schema

NAME = "celebrities"
OPERATION = "RecognizeCelebrities"
CLIENT_METHOD = "recognize_celebrities"
ORIENTATION_FIELD = "OrientationCorrection"


@dataclass(frozen=True)
class Settings:
    """`[analyses.celebrities]` in the config: RecognizeCelebrities takes no options, so no keys."""

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.celebrities") -> Settings:
        """Accept an empty table; any key raises ConfigError naming it."""
        return parse_settings(cls, mapping, where, {})


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.recognize_celebrities`."""
    return {"Image": dict(image)}


TABLES: Mapping[str, pa.Schema] = {
    "celebrities": table_schema(
        [
            pa.field("celebrity_id", pa.string()),
            pa.field("name", pa.string()),
            pa.field("match_confidence", pa.float64()),
            pa.field("urls", pa.list_(pa.string())),
            pa.field("known_gender", pa.string()),
            pa.field("face_confidence", pa.float64()),
            *BOX_FIELDS,
        ]
    ),
    "unrecognized_faces": table_schema(
        [
            pa.field("face_index", pa.int32()),
            pa.field("face_confidence", pa.float64()),
            *BOX_FIELDS,
        ]
    ),
}


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows per table (without the common columns) of one RecognizeCelebrities response."""
    celebrities = [
        {
            "celebrity_id": celebrity.get("Id"),
            "name": celebrity.get("Name"),
            "match_confidence": celebrity.get("MatchConfidence"),
            "urls": None if celebrity.get("Urls") is None else list(celebrity["Urls"]),
            "known_gender": member(celebrity, "KnownGender", "Type"),
            "face_confidence": member(celebrity, "Face", "Confidence"),
            **placement.box_columns(member(celebrity, "Face", "BoundingBox")),
        }
        for celebrity in response.get("CelebrityFaces") or []
    ]
    unrecognized = [
        {
            "face_index": index,
            "face_confidence": face.get("Confidence"),
            **placement.box_columns(face.get("BoundingBox")),
        }
        for index, face in enumerate(response.get("UnrecognizedFaces") or [])
    ]
    return {"celebrities": celebrities, "unrecognized_faces": unrecognized}


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
