"""Index faces: IndexFaces into a face collection -> tables `indexed_faces` and `unindexed_faces`.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, IndexFaces, FaceRecord,
Face, UnindexedFace) and the Developer Guide, "Adding faces to a collection"
(https://docs.aws.amazon.com/rekognition/latest/dg/add-faces-to-collection-procedure.html).

Unlike the other analyses this one changes state in the account: every indexed face is stored (and
billed per month) until it is deleted. The job keeps the collection equal to the bucket
(`batch.faces.sync`): an image is indexed only when it is new or its ETag changed, its old faces are
deleted first, and `--prune` deletes the faces of keys no longer listed. Each image is indexed with
`ExternalImageId = batch.core.external_ids.external_image_id(key)`.

* `indexed_faces`: one row per stored face: its FaceId, the collection, and the face's detail (the
  columns of the `faces` table; attributes other than the defaults are null unless requested).
* `unindexed_faces`: one row per face IndexFaces detected but did not store, with the reasons.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses import faces
from batch.analyses._rows import integer, member, parse_settings, strings
from batch.analyses.base import Analysis, DriverHooks, DriverSetup
from batch.core.errors import ConfigError
from batch.core.external_ids import external_image_id
from batch.core.geometry import BoxPlacement
from batch.core.tables import table_schema
from batch.faces.sync import COLLECTION_SUMMARY_FIELDS, CollectionHooks

NAME = "index_faces"
OPERATION = "IndexFaces"
CLIENT_METHOD = "index_faces"
ORIENTATION_FIELD = "OrientationCorrection"

#: `CollectionId` in the botocore model: 1-255 characters of this pattern.
COLLECTION_ID = re.compile(r"[a-zA-Z0-9_.\-]{1,255}")
#: The `QualityFilter` enum of the botocore model.
QUALITY_FILTERS: tuple[str, ...] = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")
#: "IndexFaces returns no more than 100 detected faces in an image" (API reference, MaxFaces).
MAX_FACES = 100


def check_collection_id(key: str, value: Any) -> str:
    """A collection id Rekognition accepts, or "" (unset); ConfigError naming `key` otherwise."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a string, got {value!r}")
    if value and not COLLECTION_ID.fullmatch(value):
        raise ConfigError(f"{key}: a collection id is 1-255 letters, digits, '_', '.' or '-', got {value!r}")
    return value


def check_quality_filter(key: str, value: Any) -> str:
    """One of `QUALITY_FILTERS` (IndexFaces' and CompareFaces' `QualityFilter`); ConfigError naming `key`."""
    if value not in QUALITY_FILTERS:
        raise ConfigError(f"{key}: must be one of {', '.join(QUALITY_FILTERS)}, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class Settings:
    """`[analyses.index_faces]` in the config (`--collection` sets `collection`).

    `detection_attributes` is sent as `DetectionAttributes` (["DEFAULT"]: box, confidence, pose,
    quality and landmarks; ["ALL"]: every attribute column of `indexed_faces` filled).
    """

    collection: str = ""
    max_faces: int = MAX_FACES
    quality_filter: str = "AUTO"
    detection_attributes: tuple[str, ...] = ("DEFAULT",)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.index_faces") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        return parse_settings(
            cls,
            mapping,
            where,
            {
                "collection": check_collection_id,
                "max_faces": integer(1, MAX_FACES),
                "quality_filter": check_quality_filter,
                "detection_attributes": strings(choices=faces.ATTRIBUTES),
            },
        )


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.index_faces`, without `ExternalImageId` (see `image_request`)."""
    return {
        "CollectionId": settings.collection,
        "Image": dict(image),
        "MaxFaces": settings.max_faces,
        "QualityFilter": settings.quality_filter,
        "DetectionAttributes": list(settings.detection_attributes),
    }


_FACE_FIELDS = [f for f in faces.TABLES["faces"] if f.name not in {"run_id", "bucket", "key", "etag"}]

TABLES: Mapping[str, pa.Schema] = {
    "indexed_faces": table_schema(
        [
            pa.field("collection_id", pa.string()),
            pa.field("face_id", pa.string()),
            pa.field("image_id", pa.string()),
            pa.field("external_image_id", pa.string()),
            pa.field("face_model_version", pa.string()),
            *_FACE_FIELDS,
        ]
    ),
    "unindexed_faces": table_schema(
        [
            pa.field("collection_id", pa.string()),
            pa.field("reasons", pa.list_(pa.string())),
            *_FACE_FIELDS,
        ]
    ),
}


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows per table (without the common columns and `collection_id`) of one IndexFaces response."""
    version = response.get("FaceModelVersion")
    indexed = [
        {
            "face_id": member(record, "Face", "FaceId"),
            "image_id": member(record, "Face", "ImageId"),
            "external_image_id": member(record, "Face", "ExternalImageId"),
            "face_model_version": version,
            **faces.face_row(index, record.get("FaceDetail") or {}, placement),
        }
        for index, record in enumerate(response.get("FaceRecords") or [])
    ]
    unindexed = [
        {"reasons": face.get("Reasons"), **faces.face_row(index, face.get("FaceDetail") or {}, placement)}
        for index, face in enumerate(response.get("UnindexedFaces") or [])
    ]
    return {"indexed_faces": indexed, "unindexed_faces": unindexed}


#: `[pricing]` keys of a collection beyond its IndexFaces calls: each face stored, per month ("face
#: metadata storage"), and each call that keeps the collection in sync (`batch.faces.sync`).
STORAGE_PRICES: dict[str, float] = {"face_storage_month": 0.00001, "storage_operation": 0.0}


@dataclass(frozen=True)
class IndexFaces(Analysis):
    """IndexFaces with its collection kept equal to the bucket by the driver (`batch.faces.sync`)."""

    prunes: bool = True
    stateful: bool = True

    def request(self, image: Mapping[str, Any], key: str, settings: Any) -> dict[str, Any]:
        """The request, with the image's `ExternalImageId` made from its key."""
        return {**build_request(image, settings), "ExternalImageId": external_image_id(key)}

    def shared_columns(self, settings: Any) -> dict[str, Any]:
        return {"collection_id": settings.collection}

    def check(self, settings: Any) -> None:
        if not settings.collection:
            raise ConfigError("analyses.index_faces.collection: required by index_faces (--collection NAME)")

    def extra_prices(self) -> dict[str, float]:
        return dict(STORAGE_PRICES)

    def summary_fields(self) -> dict[str, Any]:
        return dict(COLLECTION_SUMMARY_FIELDS)

    def driver(self, setup: DriverSetup) -> DriverHooks:
        return CollectionHooks(setup)


ANALYSIS = IndexFaces(
    name=NAME,
    operation=OPERATION,
    client_method=CLIENT_METHOD,
    settings_type=Settings,
    tables=TABLES,
    build_request=build_request,
    flatten=flatten,
    orientation_field=ORIENTATION_FIELD,
)
