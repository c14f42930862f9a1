"""Face collections as rows and text: the `rekbatch collection export` file and what `list` and
`describe` print. Pure: no I/O (the calls are in `batch.faces.admin`).

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`): the `Face` shape that
ListFaces answers with, and DescribeCollection's response.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from batch.core.external_ids import key_of
from batch.core.tables import rows_to_table

#: One row per face stored in the collection (docs/tables.md, "`collection export`").
EXPORT_SCHEMA = pa.schema(
    [
        pa.field("collection_id", pa.string()),
        pa.field("face_id", pa.string()),
        pa.field("image_id", pa.string()),
        pa.field("external_image_id", pa.string()),
        pa.field("key", pa.string()),
        pa.field("box_left", pa.float64()),
        pa.field("box_top", pa.float64()),
        pa.field("box_width", pa.float64()),
        pa.field("box_height", pa.float64()),
        pa.field("confidence", pa.float64()),
        pa.field("index_faces_model_version", pa.string()),
        pa.field("user_id", pa.string()),
    ]
)


def export_row(collection_id: str, face: Mapping[str, Any]) -> dict[str, Any]:
    """One ListFaces `Face` as an export row. `key` is decoded from the ExternalImageId when it is the
    escaped form `batch.core.external_ids` makes; null for the digest form and for ids the job did not
    make."""
    external = face.get("ExternalImageId")
    box = face.get("BoundingBox") or {}
    return {
        "collection_id": collection_id,
        "face_id": face.get("FaceId"),
        "image_id": face.get("ImageId"),
        "external_image_id": external,
        "key": key_of(external) if external else None,
        "box_left": box.get("Left"),
        "box_top": box.get("Top"),
        "box_width": box.get("Width"),
        "box_height": box.get("Height"),
        "confidence": face.get("Confidence"),
        "index_faces_model_version": face.get("IndexFacesModelVersion"),
        "user_id": face.get("UserId"),
    }


def export_table(collection_id: str, faces: Iterable[Mapping[str, Any]]) -> pa.Table:
    """A page of faces as a table of `EXPORT_SCHEMA`."""
    return rows_to_table([export_row(collection_id, face) for face in faces], EXPORT_SCHEMA)


@dataclass(frozen=True)
class CollectionInfo:
    """What DescribeCollection says of one collection."""

    collection_id: str
    faces: int
    users: int
    face_model_version: str | None
    arn: str | None
    created: datetime | None

    @classmethod
    def from_response(cls, collection_id: str, response: Mapping[str, Any]) -> CollectionInfo:
        return cls(
            collection_id=collection_id,
            faces=int(response.get("FaceCount") or 0),
            users=int(response.get("UserCount") or 0),
            face_model_version=response.get("FaceModelVersion"),
            arn=response.get("CollectionARN"),
            created=response.get("CreationTimestamp"),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "collection_id": self.collection_id,
            "faces": self.faces,
            "users": self.users,
            "face_model_version": self.face_model_version,
            "arn": self.arn,
            "created": self.created.isoformat() if self.created else None,
        }


@dataclass(frozen=True)
class TablesAgreement:
    """How a collection compares with the committed `indexed_faces` rows of one output."""

    #: Distinct faces the committed rows list in this collection (history included: faces of older
    #: ETags and of pruned keys, deleted since).
    listed_by_rows: int
    #: Faces stored now that some committed row lists.
    stored_known: int
    #: Faces stored now that no committed row lists: orphans a run will delete, or faces another
    #: output or tool indexed.
    stored_unknown: int

    @property
    def agree(self) -> bool:
        return self.stored_unknown == 0

    @classmethod
    def compare(cls, stored: Iterable[str], known: set[str]) -> TablesAgreement:
        """From the face ids ListFaces shows and the face ids the committed rows list."""
        ids = set(stored)
        return cls(len(known), len(ids & known), len(ids - known))


def _when(created: datetime | None) -> str:
    return created.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if created else "-"


def aligned(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain text table: columns padded to their widest cell, numbers right-aligned."""
    cells = [list(header), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(row[i].isdigit() for row in cells[1:]) and len(cells) > 1 for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True))
        for row in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


def collections_table(infos: Iterable[CollectionInfo]) -> str:
    """`rekbatch collection list`: one line per collection."""
    rows = [(i.collection_id, str(i.faces), i.face_model_version or "-", _when(i.created)) for i in infos]
    return aligned(("collection", "faces", "model", "created"), rows)


def describe_lines(
    info: CollectionInfo, face_storage_month: float, tables: TablesAgreement | None = None, output: str = ""
) -> list[str]:
    """`rekbatch collection describe`: the collection, its monthly storage price, and with `--output`
    how it compares with the committed rows."""
    lines = [
        f"collection {info.collection_id}",
        f"  arn: {info.arn or '-'}",
        f"  faces: {info.faces} (${info.faces * face_storage_month:.4f}/month at list price)",
        f"  users: {info.users}",
        f"  face model: {info.face_model_version or '-'}",
        f"  created: {_when(info.created)}",
    ]
    if tables is not None:
        verdict = (
            "yes" if tables.agree else f"no: {tables.stored_unknown} stored faces no committed row lists"
        )
        lines += [
            f"  committed indexed_faces rows in {output}: {tables.listed_by_rows} faces, "
            f"{tables.stored_known} of them still stored",
            f"  collection and tables agree: {verdict}",
        ]
    return lines
