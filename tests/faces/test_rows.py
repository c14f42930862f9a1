"""batch.faces.rows: the export file's rows and schema, and what `rekbatch collection` prints."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
from conftest import examples
from hypothesis import given, settings
from shape_strategies import response_values

from batch.core.external_ids import external_image_id
from batch.faces.rows import (
    EXPORT_SCHEMA,
    CollectionInfo,
    TablesAgreement,
    aligned,
    collections_table,
    describe_lines,
    export_row,
    export_table,
)
from batch.storage.sink import parquet_bytes

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tables.md"


@settings(max_examples=examples(200), deadline=None)
@given(response_values("ListFaces"))
def test_every_listfaces_page_the_model_allows_becomes_rows_of_the_schema(page: dict) -> None:
    faces = page.get("Faces") or []
    table = pq.read_table(io.BytesIO(parquet_bytes(export_table("people", faces), "zstd")))
    assert table.schema == EXPORT_SCHEMA
    rows = table.to_pylist()
    assert [r["face_id"] for r in rows] == [f.get("FaceId") for f in faces]
    assert [r["user_id"] for r in rows] == [f.get("UserId") for f in faces]
    assert [r["box_top"] for r in rows] == [(f.get("BoundingBox") or {}).get("Top") for f in faces]
    assert {r["collection_id"] for r in rows} <= {"people"}


def test_the_key_is_decoded_from_the_escaped_external_id_only() -> None:
    unicode_key = "photos/a b/été=1+2.jpg"
    long_key = "photos/" + "é" * 200 + ".jpg"  # escaped, it is over 255 characters: the digest form
    face = {
        "FaceId": "f1",
        "ImageId": "i1",
        "BoundingBox": {"Left": 0.1, "Top": 0.2, "Width": 0.3, "Height": 0.4},
        "Confidence": 99.5,
        "IndexFacesModelVersion": "7.0",
    }
    row = export_row("people", {**face, "ExternalImageId": external_image_id(unicode_key)})
    assert row == {
        "collection_id": "people",
        "face_id": "f1",
        "image_id": "i1",
        "external_image_id": "photos:2Fa:20b:2F:C3:A9t:C3:A9:3D1:2B2.jpg",
        "key": unicode_key,
        "box_left": 0.1,
        "box_top": 0.2,
        "box_width": 0.3,
        "box_height": 0.4,
        "confidence": 99.5,
        "index_faces_model_version": "7.0",
        "user_id": None,
    }
    assert export_row("people", {**face, "ExternalImageId": external_image_id(long_key)})["key"] is None
    assert export_row("people", {**face, "ExternalImageId": "someone:else"})["key"] is None
    assert export_row("people", face)["key"] is None


def test_docs_describe_every_export_column() -> None:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("## `collection export`")
    section = text[start : text.index("\n## ", start + 1)]
    for column in EXPORT_SCHEMA.names:
        assert f"| `{column}` |" in section, f"{column} is not documented"


def test_tables_agree_when_every_stored_face_is_listed_by_a_committed_row() -> None:
    history = {"old-1", "old-2"}  # faces of an older ETag, deleted since: not a disagreement
    agreement = TablesAgreement.compare(["a", "b"], {"a", "b", *history})
    assert (agreement.listed_by_rows, agreement.stored_known, agreement.stored_unknown) == (4, 2, 0)
    assert agreement.agree
    orphaned = TablesAgreement.compare(["a", "b", "c"], {"a", "b"})
    assert (orphaned.stored_unknown, orphaned.agree) == (1, False)


def test_collection_info_and_what_list_and_describe_print() -> None:
    created = datetime(2026, 11, 25, 2, 15, tzinfo=UTC)
    response = {
        "FaceCount": 1200,
        "FaceModelVersion": "7.0",
        "CollectionARN": "arn:aws:rekognition:us-east-1:123456789012:collection/people",
        "CreationTimestamp": created,
        "UserCount": 0,
    }
    people = CollectionInfo.from_response("people", response)
    empty = CollectionInfo.from_response("a-much-longer-name", {})
    assert people.as_json() == {
        "collection_id": "people",
        "faces": 1200,
        "users": 0,
        "face_model_version": "7.0",
        "arn": response["CollectionARN"],
        "created": "2026-11-25T02:15:00+00:00",
    }
    assert collections_table([people, empty]).splitlines() == [
        "collection          faces  model  created",
        "people               1200  7.0    2026-11-25 02:15:00 UTC",
        "a-much-longer-name      0  -      -",
    ]
    lines = describe_lines(people, 0.00001, TablesAgreement(3, 2, 1), "out/")
    assert "  faces: 1200 ($0.0120/month at list price)" in lines
    assert lines[-2:] == [
        "  committed indexed_faces rows in out/: 3 faces, 2 of them still stored",
        "  collection and tables agree: no: 1 stored faces no committed row lists",
    ]


def test_aligned_pads_text_left_and_numbers_right() -> None:
    assert aligned(("a", "n"), [("x", "5"), ("long", "120")]) == "a       n\nx       5\nlong  120"
    assert aligned(("a", "n"), []) == "a  n"
